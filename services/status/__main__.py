"""Run the status-tracking worker: python -m services.status."""

from services.status.app import runtime

if __name__ == "__main__":
    runtime.main()
