"""The official openai SDK against a live preftune: files, and errors as typed exceptions.

usage: openai_files.py BASE_URL API_KEY WORK_DIR
"""
import os
import sys

import openai

base_url, api_key, work = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

path = os.path.join(work, "train.jsonl")
with open(path, "w") as f:
    for i in range(50):
        f.write('{"prompt": "a red dot %d", "sample": [0.1, -0.2, 0.3]}\n' % i)

created = client.files.create(file=open(path, "rb"), purpose="fine-tune")
assert created.id.startswith("file-") and created.purpose == "fine-tune", created
assert created.bytes == os.path.getsize(path) and created.filename == "train.jsonl", created
assert [f.id for f in client.files.list()] == [created.id]
assert client.files.retrieve(created.id).bytes == created.bytes
assert client.files.content(created.id).read() == open(path, "rb").read()

try:
    client.files.retrieve("file-missing")
    raise AssertionError("no error for a missing file")
except openai.NotFoundError as error:
    assert error.status_code == 404

try:
    client.files.create(file=open(path, "rb"), purpose="assistants")
    raise AssertionError("no error for a bad purpose")
except openai.BadRequestError as error:
    assert error.body["param"] == "purpose", error.body

try:
    openai.OpenAI(base_url=base_url, api_key="sk-pt-wrong", max_retries=0).files.list()
    raise AssertionError("no error for a bad key")
except openai.AuthenticationError as error:
    assert error.status_code == 401

assert client.files.delete(created.id).deleted
print("openai sdk", openai.__version__, "ok")
