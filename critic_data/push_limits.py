"""How long `critic-data push` waits for the Hub, and how often it asks again: the numbers the push
applies (critic_data/hub.py) and its `--timeout` option states (critic_data/cli.py).

Apart from the Hub client so that the CLI, which only names these numbers, need not import
huggingface_hub to show its help. A leaf: it imports nothing.
"""

ATTEMPTS = 4  # tries per Hub call; waits of 0.5, 1, 2 s in between
RETRY_WINDOW = 60  # seconds: no call is tried again later than this after its first try
DEFAULT_TIMEOUT = 60.0  # seconds a request waits to connect, or for the next bytes of an answer
MAX_TIMEOUT = 86_400.0  # a day; sockets refuse timeouts past about 9.2e9 s (OverflowError)
