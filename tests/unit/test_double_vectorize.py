"""A pipeline that vectorizes text, fitted on text the script already vectorized, loses its text
vectorizers (nodes.double_vectorize, nodes.execute.double_vectorize_fix): each script is run for
real on tables written for the test, before and after; and what is left to the repair call."""

from __future__ import annotations

import pandas as pd
import pytest

from nodes.double_vectorize import not_text, unvectorize
from nodes.execute import Execution, double_vectorize_fix, harness_fixes, run_with_repairs
from nodes.operators import Candidate
from tests.conftest import run_solution, scripted_model

TWICE = '''import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
train = pd.read_csv("train.csv")
tfidf = TfidfVectorizer()
X_train_tfidf = tfidf.fit_transform(train["text"])
model = make_pipeline(FunctionTransformer(np.ravel), TfidfVectorizer(), LogisticRegression())
model.fit({fitted}, train["label"])
print(f"METRIC: {{(model.predict({fitted}) == train['label']).mean():.3f}}")
'''


@pytest.fixture
def folder(tmp_path):
    words = ["red apple", "green apple", "blue sky", "grey sky"] * 6
    pd.DataFrame({"text": words, "label": [w.split()[1] for w in words]}).to_csv(tmp_path / "train.csv", index=False)
    return tmp_path


@pytest.mark.parametrize("fitted", ["X_train_tfidf", "X_train_tfidf.toarray()"])
def test_the_second_vectorizer_leaves_the_pipeline_and_the_script_runs(folder, fitted):
    code = TWICE.format(fitted=fitted)
    ex = run_solution(code, folder)
    assert not_text(ex.failure), ex.failure
    fix = double_vectorize_fix(Candidate(code=code), ex)
    assert fix is not None
    cand, record = fix
    assert record["stage"] == "unvectorized" and record["line"] == 11
    assert record["added"] == ["make_pipeline(FunctionTransformer(np.ravel), TfidfVectorizer(), LogisticRegression())"
                               " -> make_pipeline(LogisticRegression())"]
    assert run_solution(cand.code, folder).output.strip() == "METRIC: 1.000"


def test_a_step_runs_the_script_again_and_the_record_says_it_got_past_the_error(folder):
    ran: list[str] = []

    def run(c: Candidate, attempt: int) -> Execution:
        ran.append(c.code)
        return run_solution(c.code, folder)

    code = TWICE.format(fitted="X_train_tfidf")
    cand, ex, records = run_with_repairs(Candidate(plan="p", code=code), run, scripted_model([]), "facts",
                                         system_prompt=True, max_repairs=0)
    assert [r["stage"] for r in records] == ["unvectorized"] and records[0]["fixed"] is True
    assert len(ran) == 2 and ex.exit_code == 0
    assert double_vectorize_fix in harness_fixes()  # always on


def test_what_is_left_to_the_repair_call():
    failure = "AttributeError: 'csr_matrix' object has no attribute 'lower'"
    raw = TWICE.format(fitted='train["text"]')  # the raw text: the pipeline's vectorizer is the one that counts
    assert unvectorize(raw, failure, 11) is None
    only = TWICE.format(fitted="X_train_tfidf").replace(
        "make_pipeline(FunctionTransformer(np.ravel), TfidfVectorizer(), LogisticRegression())",
        "make_pipeline(TfidfVectorizer())")  # nothing would be left of it
    assert unvectorize(only, failure, 11) is None
    assert unvectorize(TWICE.format(fitted="X_train_tfidf"), "KeyError: 'text'", 11) is None
