"""Latency histograms stored as cumulative counts from their first non-empty bin
(usage/histogram.py): percentiles become a binary search (`width_bucket`) the database runs per
hour, instead of every bin of every hour sent to Python and added up there.

Existing rows are re-encoded in place (dense per-bin counts → [−first bin, cumulative counts to
the last non-empty bin]); the reverse turns them back. The fold functions change with them."""

from django.db import migrations

# A batch's (bin, count) pairs, ascending by bin and each bin once (the fold statement
# aggregates them so), as one stored histogram: each bin's running total repeated up to the next
# non-empty bin. One array_fill per pair, not one statement per bin: as cheap as 0006's dense
# lists (bench: 3,151 batches of three organizations' hours folded in SQL).
BINS_DENSE = """
CREATE OR REPLACE FUNCTION usage_bins_dense(bins integer[], counts integer[]) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    encoded integer[] := ARRAY[-bins[1]];
    running integer := 0;
    pairs integer := cardinality(bins);
BEGIN
    FOR j IN 1 .. pairs - 1 LOOP
        running := running + counts[j];
        encoded := encoded || array_fill(running, ARRAY[bins[j + 1] - bins[j]]);
    END LOOP;
    RETURN encoded || (running + counts[pairs]);
END
$$
"""

# Two stored histograms merged. A histogram counts 0 below its first bin and its total above its
# last. The usual case (a batch's latencies inside the stored hour's range, or above its first
# bin) adds the batch into the stored array in place from the batch's first bin on: one
# statement per bin, fewer than 0006's test of every bin of the batch's dense list.
BINS_ADD = """
CREATE OR REPLACE FUNCTION usage_bins_add(a integer[], b integer[]) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total integer[] := a;
    delta integer[] := b;
    merged integer[];
    shift integer;  -- total's index of a bin minus delta's index of it
    delta_end integer;  -- total's index of delta's last bin
    delta_total integer;
BEGIN
    IF a IS NULL OR cardinality(a) = 0 THEN RETURN b; END IF;
    IF b IS NULL OR cardinality(b) = 0 THEN RETURN a; END IF;
    IF b[1] > a[1] THEN  -- b's first bin is lower (stored negated): add a into b
        total := b;
        delta := a;
    END IF;
    shift := total[1] - delta[1];
    delta_end := cardinality(delta) + shift;
    delta_total := delta[cardinality(delta)];
    IF delta_end > cardinality(total) THEN
        -- The delta reaches above total's last bin: carry total's own total up to there first.
        merged := total || array_fill(total[cardinality(total)], ARRAY[delta_end - cardinality(total)]);
        total := merged;
    END IF;
    FOR i IN 2 + shift .. delta_end LOOP
        total[i] := total[i] + delta[i - shift];
    END LOOP;
    FOR i IN delta_end + 1 .. cardinality(total) LOOP
        total[i] := total[i] + delta_total;
    END LOOP;
    RETURN total;
END
$$
"""

OLD_BINS_DENSE = """
CREATE OR REPLACE FUNCTION usage_bins_dense(bins integer[], counts integer[]) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    dense integer[];
    top integer := 0;
BEGIN
    FOR i IN 1 .. cardinality(bins) LOOP
        IF bins[i] > top THEN top := bins[i]; END IF;
    END LOOP;
    dense := array_fill(0, ARRAY[top + 1]);
    FOR i IN 1 .. cardinality(bins) LOOP
        dense[bins[i] + 1] := dense[bins[i] + 1] + counts[i];
    END LOOP;
    RETURN dense;
END
$$
"""

OLD_BINS_ADD = """
CREATE OR REPLACE FUNCTION usage_bins_add(a integer[], b integer[]) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total integer[] := a;
    delta integer[] := b;
BEGIN
    IF a IS NULL THEN RETURN b; END IF;
    IF b IS NULL THEN RETURN a; END IF;
    IF cardinality(b) > cardinality(a) THEN
        total := b;
        delta := a;
    END IF;
    FOR i IN 1 .. cardinality(delta) LOOP
        IF delta[i] <> 0 THEN
            total[i] := total[i] + delta[i];
        END IF;
    END LOOP;
    RETURN total;
END
$$
"""

# One-off conversions for the data migration, in the transaction's own schema (gone after it).
DENSE_TO_CUMULATIVE = """
CREATE FUNCTION pg_temp.usage_dense_to_cumulative(dense integer[]) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    low integer;
    high integer;
    encoded integer[];
    running integer := 0;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(dense), 0) LOOP
        IF dense[i] <> 0 THEN
            IF low IS NULL THEN low := i; END IF;
            high := i;
        END IF;
    END LOOP;
    IF low IS NULL THEN RETURN '{}'; END IF;
    encoded := array_fill(0, ARRAY[high - low + 2]);
    encoded[1] := -(low - 1);  -- dense element i counts bin i - 1
    FOR i IN low .. high LOOP
        running := running + dense[i];
        encoded[i - low + 2] := running;
    END LOOP;
    RETURN encoded;
END
$$
"""

CUMULATIVE_TO_DENSE = """
CREATE FUNCTION pg_temp.usage_cumulative_to_dense(encoded integer[]) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    dense integer[];
    previous integer := 0;
BEGIN
    IF coalesce(cardinality(encoded), 0) = 0 THEN RETURN '{}'; END IF;
    dense := array_fill(0, ARRAY[-encoded[1] + cardinality(encoded) - 1]);
    FOR i IN 2 .. cardinality(encoded) LOOP
        dense[-encoded[1] + i - 1] := encoded[i] - previous;
        previous := encoded[i];
    END LOOP;
    RETURN dense;
END
$$
"""


def _reencode(apps, convert) -> None:
    model = apps.get_model("usage", "UsageHourly")
    batch = []
    for row in model.objects.only("id", "latency_bins").iterator(chunk_size=2000):
        row.latency_bins = convert(row.latency_bins)
        batch.append(row)
        if len(batch) == 2000:
            model.objects.bulk_update(batch, ["latency_bins"])
            batch = []
    if batch:
        model.objects.bulk_update(batch, ["latency_bins"])


def dense_to_cumulative(dense: list[int]) -> list[int]:
    occupied = [index for index, count in enumerate(dense) if count]
    if not occupied:
        return []
    encoded, running = [-occupied[0]], 0
    for count in dense[occupied[0]: occupied[-1] + 1]:
        running += count
        encoded.append(running)
    return encoded


def cumulative_to_dense(encoded: list[int]) -> list[int]:
    if not encoded:
        return []
    first, previous = -encoded[0], 0
    dense = [0] * (first + len(encoded) - 1)
    for offset, running in enumerate(encoded[1:]):
        dense[first + offset] = running - previous
        previous = running
    return dense


def _reencode_in_postgresql(schema_editor, create: str, name: str) -> None:
    schema_editor.execute(create)
    schema_editor.execute(f"UPDATE usage_usagehourly SET latency_bins = pg_temp.{name}(latency_bins)")
    schema_editor.execute(f"DROP FUNCTION pg_temp.{name}(integer[])")


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BINS_DENSE)
        schema_editor.execute(BINS_ADD)
        _reencode_in_postgresql(schema_editor, DENSE_TO_CUMULATIVE, "usage_dense_to_cumulative")
    else:
        _reencode(apps, dense_to_cumulative)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(OLD_BINS_DENSE)
        schema_editor.execute(OLD_BINS_ADD)
        _reencode_in_postgresql(schema_editor, CUMULATIVE_TO_DENSE, "usage_cumulative_to_dense")
    else:
        _reencode(apps, cumulative_to_dense)


class Migration(migrations.Migration):
    dependencies = [("usage", "0008_rowpages")]

    operations = [migrations.RunPython(forwards, backwards)]
