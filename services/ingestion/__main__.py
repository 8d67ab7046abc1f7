"""Run the ingestion worker: python -m services.ingestion."""

from services.ingestion.app import runtime

if __name__ == "__main__":
    runtime.main()
