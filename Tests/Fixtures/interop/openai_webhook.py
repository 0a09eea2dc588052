"""Checks a webhook preftune delivered with the openai SDK's own verification
(Standard Webhooks): argv = body file, headers (JSON) file, secret. Prints the event's
type and job id, and that a tampered body is refused."""
import json
import sys

import openai

body = open(sys.argv[1], "rb").read().decode()
headers = json.load(open(sys.argv[2]))
client = openai.OpenAI(api_key="unused", webhook_secret=sys.argv[3])
event = client.webhooks.unwrap(body, headers)
print(event.type, event.data.id)
try:
    client.webhooks.unwrap(body.replace('"object":"event"', '"object":"evil"'), headers)
    raise SystemExit("a tampered body was accepted")
except openai.InvalidWebhookSignatureError:
    print("tampered: refused")
try:
    client.webhooks.unwrap(body, headers, secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=")
    raise SystemExit("another secret was accepted")
except openai.InvalidWebhookSignatureError:
    print("other secret: refused")
