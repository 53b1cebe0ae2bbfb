"""Training loops: orchestration only. They never import hydra, mlflow or vllm."""
