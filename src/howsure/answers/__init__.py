"""Free-form answers: generate short answers to questions, judge them against gold answers, and
score each with confidence estimators (token probability, P(True), verbalised confidence,
sampling consistency, semantic entropy). `howsure qa` runs it; docs/answers.md describes it."""
