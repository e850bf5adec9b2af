from django.db import migrations

BINS_DENSE = """
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


def create_bins_dense(apps, schema_editor):
    # A batch's (bin, count) pairs as the dense histogram usage.models.LatencyBinsField stores
    # (element i, 1-based i + 1 in SQL, counts bin i): PostgreSQL ingestion folds the hourly
    # histograms in the same statement as the sums. SQLite folds them in Python.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BINS_DENSE)


def drop_bins_dense(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS usage_bins_dense(integer[], integer[])")


class Migration(migrations.Migration):
    dependencies = [("usage", "0005_drop_key_time_index")]

    operations = [migrations.RunPython(create_bins_dense, drop_bins_dense)]
