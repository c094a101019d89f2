"""A model version is the ordered deltas of its tasks, not one blob of every weight.

Revision 0002 stored, per task, a blob of the whole shared network (float32 weights and an
int32 owner map: 8 bytes per weight) and the task's effective mask. From 0003 a task's
version blob holds only the values of the weights it took and its mask blob only which
weights those are (``registry.deltas``): about 1 + N/32 dense copies after N tasks instead
of 2N. The schema is unchanged; the rows keep their ids and get new blobs
(``registry.layout``), so this needs the blob store: ``strata init`` passes it as
``config.attributes["store_uri"]``. An empty registry needs none.

Downgrade rebuilds the full version blobs from the deltas (the same bytes 0002 wrote). Both
directions refuse offline (``--sql``) on a registry with tasks, since SQL alone cannot
rewrite blobs: the rendered SQL raises if ``tasks`` has rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Callable, Sequence

from alembic import context, op
from sqlalchemy.engine import Connection

from registry.blobstore import BlobStore
from registry.errors import RegistryError
from registry.layout import task_count, to_deltas, to_full_versions

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _convert(direction: str, convert: Callable[[Connection, BlobStore], None]) -> None:
    if context.is_offline_mode():
        if op.get_context().dialect.name != "postgresql":
            raise RegistryError(f"revision 0003 cannot {direction} offline on this database")
        op.execute(
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM tasks) THEN RAISE EXCEPTION "
            f"'revision 0003 must {direction} online (strata init): it rewrites blobs'; "
            "END IF; END $$"
        )
        return
    connection = op.get_bind()
    if not task_count(connection):
        return
    store_uri = context.config.attributes.get("store_uri")
    if store_uri is None:
        raise RegistryError(
            f"revision 0003 must {direction} the registry's blobs and needs its blob store: "
            "run strata init with --store (or STRATA_STORE)"
        )
    convert(connection, BlobStore(store_uri))


def upgrade() -> None:
    _convert("upgrade", to_deltas)


def downgrade() -> None:
    _convert("downgrade", to_full_versions)
