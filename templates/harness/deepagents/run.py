"""Runs the harness of harness.py on one task: the instruction on stdin, the model through the
gateway (OpenAI Chat Completions at $OPENAI_BASE_URL with the trial's token), the shell and
files of the task's working directory through DeepAgents' local shell backend (the sandbox is
the isolation)."""
import os
import sys

sys.path.insert(0, os.environ["HARNESS_DIR"])

from deepagents.backends import LocalShellBackend  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402

from harness import build_fixed_harness_agent  # noqa: E402

model = ChatOpenAI(
    model=os.environ["HARNESS_MODEL"],
    base_url=os.environ["OPENAI_BASE_URL"],
    api_key=os.environ["OPENAI_API_KEY"],
    temperature=float(os.environ["HARNESS_TEMPERATURE"]),
    max_completion_tokens=int(os.environ["HARNESS_MAX_OUTPUT_TOKENS"]),
    # The gateway retries the upstream model itself; its refusals (budgets) are final.
    max_retries=0,
    use_responses_api=False,
)
workdir = os.environ.get("HARNESS_WORKDIR") or os.getcwd()
backend = LocalShellBackend(root_dir=workdir, virtual_mode=False, inherit_env=True)
agent = build_fixed_harness_agent(model, backend)
turns = int(os.environ.get("HARNESS_MAX_TURNS", "50"))
result = agent.invoke(
    {"messages": [{"role": "user", "content": sys.stdin.read()}]},
    # LangGraph counts a model call and its tool calls as two steps; the gateway enforces the
    # turn budget, so the graph's own limit stays above it.
    config={"recursion_limit": 2 * turns + 10},
)
print(result["messages"][-1].content)
