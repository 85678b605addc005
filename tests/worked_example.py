"""The spec §1.8 worked example (a 20Q-style episode, done=True), shared by the tokenisation and value tests."""

# (text, is_action, reward)
TWENTY_Q = [
    ("Questions:\n", False, 0.0),
    ("Is it alive?\n", True, -1.0),
    ("No.\n", False, 0.0),
    ("Is it a pen?\n", True, 0.0),
    ("Yes.\n", False, 0.0),
]
