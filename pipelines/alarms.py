"""Send genad's scoring alarms on: a Prefect automation that posts each alarm to a webhook.

A scheduled run whose alarm fires emits the event `genad.scoring.alarm` (resource
`genad.deployment.<name>`, the figures in its payload). `forward_alarms` creates, on the Prefect
server in use, a `Webhook` block for the URL and an automation that calls it for every such
event (of one deployment, or of all), with a JSON body: the deployment, the interval, the rows,
the flagged count, the output and the alarm's reasons and p-values. Chat tools and incident
systems accept a webhook; Prefect's other notification blocks (Slack, Teams, PagerDuty, ...)
can replace the webhook in the automation the same way.
"""

from __future__ import annotations

from prefect import get_client
from prefect.automations import Automation
from prefect.blocks.webhook import Webhook
from prefect.events.actions import CallWebhook
from prefect.events.schemas.automations import EventTrigger, Posture

from pipelines.interval import ALARM_EVENT

BODY = (
    '{"deployment": "{{ event.resource.get(\'prefect.resource.name\') }}", '
    '"interval": "{{ event.payload.interval }}", "rows": {{ event.payload.rows }}, '
    '"flagged": {{ event.payload.anomalies }}, "output": "{{ event.payload.output }}", '
    '"reasons": {{ event.payload.alarm.reasons | tojson }}, '
    '"count_p_value": {{ event.payload.alarm.count_p_value }}, '
    '"shift_p_value": {{ event.payload.alarm.shift_p_value }}}'
)


def forward_alarms(url: str, *, deployment: str | None = None, name: str = "genad-alarms") -> str:
    """Create (or replace) the webhook block `<name>-webhook` and the automation `name` that
    posts every alarm of `deployment` (default: of every deployment) to `url`; its id."""
    block_id = Webhook(method="POST", url=url).save(f"{name}-webhook", overwrite=True)
    with get_client(sync_client=True) as client:
        for existing in client.read_automations_by_name(name=name):
            client.delete_automation(existing.id)
    trigger = EventTrigger(
        expect={ALARM_EVENT},
        match={"prefect.resource.id": f"genad.deployment.{deployment or '*'}"},
        posture=Posture.Reactive,
        threshold=1,
    )
    action = CallWebhook(block_document_id=block_id, payload=BODY)
    created = Automation(name=name, trigger=trigger, actions=[action]).create()
    return str(created.id)
