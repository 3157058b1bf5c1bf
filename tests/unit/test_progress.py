"""The run's progress display: a rich live panel on a terminal, plain lines elsewhere."""

import io

from views.progress import RunProgress

EVENTS = [
    {"kind": "step", "step": 0, "stage": "draft", "parent": None},
    {"kind": "strategy", "step": 0, "stage": "executed", "candidate": 2, "total": 4, "metric": 0.71},
    {"kind": "recorded", "step": 0, "node_id": "00000-0", "stage": "draft", "outcome": "metric 0.71",
     "tokens": 1200, "llm_seconds": 3.5, "exec_seconds": 1.25, "best_metric": 0.71},
    {"kind": "step", "step": 1, "stage": "debug", "parent": "00000-0"},
    {"kind": "strategy", "step": 1, "stage": "reflecting", "round": 2, "rounds": 3},
    {"kind": "recorded", "step": 1, "node_id": "00001-0", "stage": "debug",
     "outcome": "buggy: [red]KeyError: 'x'[/red] \x1b[31m", "tokens": 800, "llm_seconds": 2.0,
     "exec_seconds": 0.5, "best_metric": 0.71},
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    with RunProgress(total=4, done=0, stream=out) as progress:
        for event in EVENTS:
            progress.handle(event)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[step 1/4] draft"
    assert "    candidate 2/4: metric 0.71" in lines
    assert "  node 00000-0 (draft): metric 0.71 [LLM 3.5 s, exec 1.2 s]" in lines
    assert "[step 2/4] debug of 00000-0" in lines
    assert progress.done == 2 and progress.tokens == 2000 and progress.llm_seconds == 5.5


def test_live_panel_on_a_terminal():
    out = Terminal()
    with RunProgress(total=4, done=0, stream=out) as progress:
        for event in EVENTS[:5]:
            progress.handle(event)
        assert progress.live
        progress._live.refresh()
        mid = out.getvalue()
        progress.handle(EVENTS[5])  # model text with rich markup must show literally, not crash
    text = out.getvalue()
    assert "step" in mid and "1/4" in mid and "round 2/3: reflecting" in mid  # bar row with the sub-step
    assert "best validation metric 0.71 | 1200 tokens | 3.5 s LLM" in mid
    assert "last: node 00000-0 (draft): metric 0.71" in mid
    assert "[red]KeyError" in text and "2000 tokens" in text
