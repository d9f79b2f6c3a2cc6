"""The harness definition file: how the DeepAgents agent is instantiated and controlled.

The Self-Harness paper's initial harness (its Figure 3) for LangChain DeepAgents. Each
`build_*` function is a declared configuration point; the instruction texts live in
`prompts/*.md` and the runtime-control policy in `runtime_control.json`, each an editable
surface of `harness.yaml`. The instructions reach the model as the paper's code wires them:
appended to the system message on each model call, bootstrap only before the first tool call,
failure recovery only after a failed one, execution and verification always.
"""
import json
import os
from pathlib import Path

from deepagents import create_deep_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import SystemMessage, ToolMessage

HARNESS_DIR = Path(os.environ.get("HARNESS_DIR") or Path(__file__).resolve().parent)


def _surface(rel):
    return (HARNESS_DIR / rel).read_text().strip()


def build_system_prompt():
    return _surface("prompts/system.md")


def build_memory_sources():
    return ["/AGENTS.md"]


def build_subagents():
    return []


def build_skills():
    return []


def build_bootstrap_instruction():
    return _surface("prompts/bootstrap.md")


def build_execution_instruction():
    return _surface("prompts/execution.md")


def build_verification_instruction():
    return _surface("prompts/verification.md")


def build_failure_recovery_instruction():
    return _surface("prompts/failure_recovery.md")


def build_runtime_control_policy():
    return json.loads(_surface("runtime_control.json"))


def _tool_messages(messages):
    return [m for m in messages if isinstance(m, ToolMessage)]


def _failed(message):
    # The paper's predicate (an error status, or a result that says "error"), plus DeepAgents'
    # own report of a shell command that exited non-zero.
    text = str(message.content)
    return (
        getattr(message, "status", None) == "error"
        or "error" in text.lower()
        or "[Command failed with exit code" in text
    )


def _no_tool_call_yet(messages):
    return not _tool_messages(messages)


def _a_tool_call_failed(messages):
    return any(_failed(m) for m in _tool_messages(messages))


def _always(messages):
    return True


class InstructionMiddleware(AgentMiddleware):
    """Appends an instruction to the system message of each model call its predicate admits."""

    def __init__(self, name, text, when):
        super().__init__()
        self._name = name
        self.text = text
        self.when = when

    @property
    def name(self):
        return self._name

    def _request(self, request):
        text = self.text() if callable(self.text) else self.text
        if not text or not self.when(request.messages):
            return request
        system = request.system_message.text if request.system_message else ""
        joined = f"{system}\n\n{text}" if system else text
        return request.override(system_message=SystemMessage(content=joined))

    def wrap_model_call(self, request, handler):
        return handler(self._request(request))

    async def awrap_model_call(self, request, handler):
        return await handler(self._request(request))


def _runtime_control(policy):
    """The policy's instruction once recent tool errors or tool messages reach its limits."""

    def when(messages):
        if not policy.get("enabled"):
            return False
        tools = _tool_messages(messages)
        max_errors = policy.get("max_recent_tool_errors")
        max_total = policy.get("max_total_tool_messages")
        recent = 0
        for m in reversed(tools):
            if not _failed(m):
                break
            recent += 1
        return (max_errors is not None and recent >= max_errors) or (
            max_total is not None and len(tools) >= max_total
        )

    return InstructionMiddleware("runtime_control", policy.get("instruction") or "", when)


def build_middleware():
    return [
        InstructionMiddleware("bootstrap", build_bootstrap_instruction(), _no_tool_call_yet),
        InstructionMiddleware("execution", build_execution_instruction(), _always),
        InstructionMiddleware("verification", build_verification_instruction(), _always),
        InstructionMiddleware(
            "failure_recovery", build_failure_recovery_instruction(), _a_tool_call_failed
        ),
        _runtime_control(build_runtime_control_policy()),
    ]


def build_fixed_harness_agent(model, backend=None):
    return create_deep_agent(
        model=model,
        system_prompt=build_system_prompt(),
        memory=build_memory_sources(),
        subagents=build_subagents(),
        skills=build_skills() or None,
        middleware=build_middleware(),
        backend=backend,
    )
