"""Run the ingestion worker: python -m services.ingestion."""

from services.ingestion.agents import runtime

if __name__ == "__main__":
    runtime.main()
