"""The jobs of the several-workers example: plain functions at the top of a module.

A persistent job store keeps each job's function as a reference ``module:name`` that every
worker imports, so jobs live in an importable module like this one.
"""


async def send_digest(team: str) -> None:
    print(f"digest for {team}")


async def nightly_report() -> None:
    print("nightly report")
