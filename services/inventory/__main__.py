"""Run the inventory worker: python -m services.inventory."""

from services.inventory.agents import runtime

if __name__ == "__main__":
    runtime.main()
