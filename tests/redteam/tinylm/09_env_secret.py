# class: secrets from the environment
# expect: caught
# what: prints the API key from its environment
import os

print("key:", os.environ.get("ANTHROPIC_API_KEY"))
