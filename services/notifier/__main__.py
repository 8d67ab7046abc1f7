"""Run the notifier worker: python -m services.notifier."""

from services.notifier.app import runtime

if __name__ == "__main__":
    runtime.main()
