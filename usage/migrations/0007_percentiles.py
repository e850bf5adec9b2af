"""Latency histograms stored as cumulative counts from their first non-empty bin
(usage/histogram.py): percentiles become a binary search (`width_bucket`) the database runs per
hour, instead of every bin of every hour sent to Python and added up there.

Existing rows are re-encoded in place (dense per-bin counts → [−first bin, cumulative counts to
the last non-empty bin]); the reverse turns them back. The fold functions change with them."""

from django.db import migrations

# A batch's (bin, count) pairs, in any order, as one stored histogram.
BINS_DENSE = """
CREATE OR REPLACE FUNCTION usage_bins_dense(bins integer[], counts integer[]) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    encoded integer[];
    low integer := bins[1];
    high integer := bins[1];
    running integer := 0;
BEGIN
    FOR i IN 2 .. cardinality(bins) LOOP
        IF bins[i] < low THEN low := bins[i]; END IF;
        IF bins[i] > high THEN high := bins[i]; END IF;
    END LOOP;
    -- Element 1 is the first bin, negated; element b - low + 2 counts bin b, then adds up the
    -- bins below.
    encoded := array_fill(0, ARRAY[high - low + 2]);
    encoded[1] := -low;
    FOR i IN 1 .. cardinality(bins) LOOP
        encoded[bins[i] - low + 2] := encoded[bins[i] - low + 2] + counts[i];
    END LOOP;
    FOR i IN 2 .. high - low + 2 LOOP
        running := running + encoded[i];
        encoded[i] := running;
    END LOOP;
    RETURN encoded;
END
$$
"""

# Two stored histograms merged. A histogram counts 0 below its first bin and its total above its
# last. The usual case (a batch's latencies inside the stored hour's range, or above it) adds
# the batch into the stored array in place from the batch's first bin on.
BINS_ADD = """
CREATE OR REPLACE FUNCTION usage_bins_add(a integer[], b integer[]) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total integer[] := a;
    delta integer[] := b;
    merged integer[];
    delta_first integer;
    delta_last integer;
    delta_total integer;
    total_first integer;
    total_last integer;
BEGIN
    IF a IS NULL OR cardinality(a) = 0 THEN RETURN b; END IF;
    IF b IS NULL OR cardinality(b) = 0 THEN RETURN a; END IF;
    IF -b[1] < -a[1] THEN  -- total: the one whose first bin is lower
        total := b;
        delta := a;
    END IF;
    total_first := -total[1];
    total_last := total_first + cardinality(total) - 2;
    delta_first := -delta[1];
    delta_last := delta_first + cardinality(delta) - 2;
    delta_total := delta[cardinality(delta)];
    IF delta_last <= total_last THEN
        FOR i IN delta_first - total_first + 2 .. cardinality(total) LOOP
            IF i <= delta_last - total_first + 2 THEN
                total[i] := total[i] + delta[i + total_first - delta_first];
            ELSE
                total[i] := total[i] + delta_total;
            END IF;
        END LOOP;
        RETURN total;
    END IF;
    -- The delta reaches above the stored range: a longer array, from total's first bin to delta's last.
    merged := array_fill(0, ARRAY[delta_last - total_first + 2]);
    merged[1] := -total_first;
    FOR i IN 2 .. delta_last - total_first + 2 LOOP
        IF i <= cardinality(total) THEN
            merged[i] := total[i];
        ELSE
            merged[i] := total[cardinality(total)];
        END IF;
        IF i >= delta_first - total_first + 2 THEN
            merged[i] := merged[i] + delta[i + total_first - delta_first];
        END IF;
    END LOOP;
    RETURN merged;
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
    dependencies = [("usage", "0006_bins_dense")]

    operations = [migrations.RunPython(forwards, backwards)]
