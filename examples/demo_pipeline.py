"""The README demo: log a two-stage pipeline with the cmflib API in the current (initialised) workspace."""
import random
from pathlib import Path

from cmflib.cmf import Cmf

random.seed(7)
Path("data/raw").mkdir(parents=True, exist_ok=True)
for i in range(20):
    Path(f"data/raw/{i:02d}.csv").write_text("".join(f"{random.random():.4f},{i}\n" for _ in range(50)))

cmf = Cmf(filepath="mlmd", pipeline_name="demo", custom_properties={"owner": "readme"})
cmf.create_context("prepare")
cmf.create_execution("Prepare", {"split": 0.8, "seed": 7})
cmf.log_dataset("data/raw", "input", {"source": "synthetic"})
Path("data/train.csv").write_text("".join(Path(f"data/raw/{i:02d}.csv").read_text() for i in range(16)))
cmf.log_dataset("data/train.csv", "output")

cmf.create_context("train")
cmf.create_execution("Train", {"epochs": 3, "lr": 0.01})
cmf.log_dataset("data/train.csv", "input")
for epoch in range(3):
    cmf.log_metric("training_loss", {"loss": 1.0 / (epoch + 1)})
cmf.commit_metrics("training_loss")
Path("model.pkl").write_bytes(b"not really a model")
cmf.log_model("model.pkl", "output", model_framework="demo", model_type="constant")
cmf.log_execution_metrics("metrics", {"accuracy": 0.93})
print("logged pipeline 'demo'; git commit", cmf.finalize()[:12])
