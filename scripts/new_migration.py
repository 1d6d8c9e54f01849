"""Write a new schema migration from the difference between the models and the schema.

    .venv/bin/python scripts/new_migration.py "what changed" 0004

Review the generated file: alembic renders certd's UTCDateTime column type,
which a migration must spell as sa.DateTime(timezone=True); this script
rewrites it.
"""

import sys
import tempfile

from alembic import command
from sqlalchemy import create_engine

from certd.store.db import MIGRATIONS, alembic_config


def main(message: str, rev_id: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{scratch}/schema.db")
        with engine.begin() as conn:
            cfg = alembic_config(conn)
            command.upgrade(cfg, "head")
            command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id)
    for path in (MIGRATIONS / "versions").glob(f"{rev_id}_*.py"):
        text = path.read_text().replace(
            "certd.store.models.UTCDateTime(timezone=True)",
            "sa.DateTime(timezone=True)",
        )
        lines = [
            line
            for line in text.splitlines()
            if "Alembic - please adjust" not in line
            and "end Alembic commands" not in line
        ]
        path.write_text("\n".join(lines) + "\n")
        print(path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
