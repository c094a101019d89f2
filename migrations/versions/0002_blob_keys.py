"""Blob rows record store-relative keys (``<sha[:2]>/<sha>.<suffix>``), not absolute URIs.

An absolute ``file://`` URI tied a registry to the folder it was created in: a copied or
restored registry read the original's blobs, and ``strata gc --delete`` deleted every blob
of the copy. Keys are resolved against the store each command is given.

Upgrade rewrites every ``blobs.uri`` to the key at its end; a row whose URI does not end in
a key of its own sha256 stops the migration (nothing is changed). Downgrade cannot rebuild
absolute URIs without knowing the store's root, which the database does not record: it
refuses while any blob row exists (an empty registry downgrades).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from registry.errors import RegistryError

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BLOBS = sa.table("blobs", sa.column("kind"), sa.column("sha256"), sa.column("uri"))
# The key revision 0001 wrote at the end of every URI: masks as .mask, tensors as .safetensors.
SUFFIX = sa.case((BLOBS.c.kind == "mask", "mask"), else_="safetensors")
KEY = sa.func.substr(BLOBS.c.sha256, 1, 2) + "/" + BLOBS.c.sha256 + "." + SUFFIX


def upgrade() -> None:
    # Plain SQL (no rows read in Python), so ``alembic upgrade --sql`` renders it too.
    op.execute(BLOBS.update().where(BLOBS.c.uri.like("%/" + KEY)).values(uri=KEY))
    if context.is_offline_mode():
        return
    count = sa.select(sa.func.count()).select_from(BLOBS).where(BLOBS.c.uri != KEY)
    unknown = op.get_bind().scalar(count)
    if unknown:  # raising rolls the whole migration back
        raise RegistryError(
            f"cannot migrate the registry: {unknown} blob rows do not end in their "
            "sha256's key (<sha[:2]>/<sha>.<suffix>); nothing was changed"
        )


def downgrade() -> None:
    if context.is_offline_mode():
        raise RegistryError("revision 0002 cannot be downgraded offline (see its docstring)")
    count = op.get_bind().scalar(sa.select(sa.func.count()).select_from(BLOBS))
    if count:
        raise RegistryError(
            f"cannot downgrade below revision 0002: {count} blob rows hold store-relative keys, "
            "and revision 0001 needs absolute URIs, which need the store's root"
        )
