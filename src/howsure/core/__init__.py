"""Layer 1: the records every layer passes (Task, LabelScores) and the one set of input
validators; numpy only, so anything may import it cheaply."""
