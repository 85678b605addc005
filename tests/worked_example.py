"""Worked examples shared by the tokenisation, value and MC tests: the spec §1.8 20Q-style episode (done=True)
and a deterministic three-turn chain."""

# (text, is_action, reward)
TWENTY_Q = [
    ("Questions:\n", False, 0.0),
    ("Is it alive?\n", True, -1.0),
    ("No.\n", False, 0.0),
    ("Is it a pen?\n", True, 0.0),
    ("Yes.\n", False, 0.0),
]


# A deterministic 3-turn chain with multi-token actions and rewards on several turns.
CHAIN = [
    ("start room\n", False, 0.0),
    ("open the red door\n", True, 0.5),
    ("a dark hall\n", False, 0.0),
    ("walk to the end\n", True, -1.0),
    ("a small vault\n", False, 0.0),
    ("take the gold coin\n", True, 2.0),
    ("the end\n", False, 0.0),
]
