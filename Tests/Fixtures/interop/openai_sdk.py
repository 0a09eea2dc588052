"""The official openai SDK against a live preftune: files, fine-tuning jobs, and
errors as typed exceptions.

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

# A base model (preftune's own endpoint: POST /v1/models with an architecture), then jobs.
config = {"arch": "resmlp", "sample_shape": [1, 1, 3], "hidden": 8, "depth": 1, "mlp_ratio": 2, "time_freq_dim": 4,
          "cond": {"kind": "text", "vocab": 32, "max_tokens": 4}}
base = client.post("/models", body={"id": "sdk-base", "config": config, "seed": 1}, cast_to=object)
assert base["id"] == "sdk-base", base

job = client.fine_tuning.jobs.create(
    model="sdk-base", training_file=created.id, seed=7, suffix="sdk", metadata={"owner": "tests"},
    method={"type": "sft", "sft": {"hyperparameters": {"n_steps": 3, "batch_size": 2}}})
assert job.id.startswith("ftjob-") and job.status == "validating_files" and job.seed == 7, job
assert job.metadata == {"owner": "tests"}, job.metadata
assert [j.id for j in client.fine_tuning.jobs.list(limit=5)] == [job.id]
assert [j.id for j in client.fine_tuning.jobs.list(metadata={"owner": "tests"})] == [job.id]
assert list(client.fine_tuning.jobs.list(metadata={"owner": "nobody"})) == []
retrieved = client.fine_tuning.jobs.retrieve(job.id)
assert retrieved.model == "sdk-base" and retrieved.training_file == created.id
events = list(client.fine_tuning.jobs.list_events(job.id))
assert events and events[-1].message.startswith("Created fine-tuning job"), [e.message for e in events]
assert list(client.fine_tuning.jobs.checkpoints.list(job.id)) == []
cancelled = client.fine_tuning.jobs.cancel(job.id)
assert cancelled.status == "cancelled", cancelled.status
try:
    client.fine_tuning.jobs.cancel(job.id)
    raise AssertionError("cancelling twice succeeded")
except openai.ConflictError as error:
    assert error.status_code == 409

# What SDK users send out of habit: the deprecated top-level hyperparameters with "auto"
# values and a learning-rate multiplier (supervised fine-tuning: sft), and integrations: [].
legacy = client.fine_tuning.jobs.create(
    model="sdk-base", training_file=created.id, integrations=[],
    hyperparameters={"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": 2})
assert legacy.method.type == "sft", legacy.method
resolved = legacy.to_dict()["hyperparameters"]
assert abs(resolved["learning_rate"] - 2e-4) < 1e-12 and resolved["batch_size"] == 16, resolved
client.fine_tuning.jobs.cancel(legacy.id)
try:
    client.fine_tuning.jobs.create(model="sdk-base", training_file=created.id,
                                   integrations=[{"type": "wandb", "wandb": {"project": "x"}}],
                                   method={"type": "sft"})
    raise AssertionError("an unsupported integration was accepted")
except openai.BadRequestError as error:
    assert error.body["param"] == "integrations" and "wandb" in error.body["message"], error.body
try:
    client.fine_tuning.jobs.create(model="sdk-base", training_file=created.id,
                                   method={"type": "sft", "sft": {"hyperparameters": {"n_stepz": 3}}})
    raise AssertionError("an unknown hyperparameter was accepted")
except openai.BadRequestError as error:
    assert error.body["param"] == "method.sft.hyperparameters.n_stepz", error.body
try:
    client.fine_tuning.jobs.retrieve("ftjob-missing")
    raise AssertionError("a missing job was found")
except openai.NotFoundError:
    pass

assert client.files.delete(created.id).deleted
print("openai sdk", openai.__version__, "ok")
