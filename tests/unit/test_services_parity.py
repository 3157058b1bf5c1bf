"""One run config, one services builder: a run started from the CLI and the same settings sent
as a plain context (Studio, notebooks) build the same services."""

import json

import pytest

import graphs.run as cli
from graphs.services import close_services, services_for
from graphs.settings import RunContext, RunSettings
from tests.doubles.stub import StubServer


class _Captured(Exception):
    pass


@pytest.fixture
def stub():
    with StubServer() as server:
        yield server


def _cli_services(monkeypatch, argv):
    """The services the CLI builds for `argv` (its search is stopped before the first step)."""
    seen = {}

    def capture(services, resumed, *_where):
        seen["services"] = services
        raise _Captured

    monkeypatch.setattr(cli, "_search", capture)
    with pytest.raises(_Captured):
        cli.run(cli.build_parser().parse_args(argv))
    return seen["services"]


def _llm(client) -> dict:
    return {k: getattr(client, k) for k in ("model_name", "temperature", "top_p", "max_tokens", "max_retries",
                                            "request_timeout", "openai_api_base")}


def _strategy(ctx: RunContext) -> dict:
    s = ctx.services
    return {"context": ctx.model_dump(exclude={"run_dir"}), "coder": _llm(s.coder), "planner": _llm(s.planner),
            "system_text": s.system_text, "system_prompt": (s.coder_system_prompt, s.planner_system_prompt),
            "exec_timeout": s.exec_timeout, "sandbox": s.sandbox, "limits": s.limits,
            "lower": s.lower_is_better, "sampling": s.sampling.mode, "slots": s.exec_slots._value,
            "public_dir": s.public_dir.name, "held": s.held.plan if s.held else None}


def test_cli_and_a_plain_context_build_the_same_services(tmp_path, toy_task, stub, monkeypatch):
    argv = ["--task", str(toy_task), "--base-url", stub.base_url, "--run-id", "parity", "--run-dir",
            str(tmp_path / "cli"), "--strategy", "self_consistency", "--samples", "3", "--steps", "7",
            "--temperature", "0.3", "--top-p", "0.9", "--llm-retries", "5", "--llm-timeout", "77",
            "--system-prompt", "off", "--mem-limit-mb", "300", "--max-procs", "64", "--sandbox", "plain",
            "--exec-timeout", "40", "--repairs", "1", "--holdout-fraction", "0.2"]
    a = _cli_services(monkeypatch, argv)
    # what run.json holds is the context Studio sends (here with another run directory)
    saved = json.loads((tmp_path / "cli" / "parity" / "run.json").read_text())
    try:
        b = services_for(RunContext(**saved, run_dir=str(tmp_path / "studio")), "some-thread")
        assert b.settings.run_id == "parity"  # the context names the run; the thread does not rename it
        assert a.settings == b.settings and RunSettings(**saved) == a.settings
        assert a.system_text == b.system_text and a.use_system_prompt is b.use_system_prompt is False
        assert _llm(a.llm) == _llm(b.llm)
        assert _llm(a.llm)["top_p"] == 0.9 and _llm(a.llm)["max_retries"] == 5
        assert a.settings.limits() == b.settings.limits() and a.settings.limits().processes == 64
        assert a.held.plan == b.held.plan and a.selection["by"] == b.selection["by"] == "holdout"
        assert a.held.plan.rows == b.held.plan.rows == 10 and a.settings.holdout_fraction == 0.2  # 10 at least
        assert _strategy(a.strategy_context) == _strategy(b.strategy_context)
        assert a.strategy_context.samples == 3 and a.strategy_context.repairs == 1
        # the plain context's services are cached per thread and settings, and closed on request
        assert services_for(RunContext(**saved, run_dir=str(tmp_path / "studio")), "some-thread") is b
    finally:
        a.store.close()
        close_services()
    with pytest.raises(Exception, match="closed"):
        b.store.count()
