"""Below the ORM, PostgreSQL refuses what the model layer refuses: changing or deleting a ledger
entry or a credit note, changing an issued invoice (but its payment and voiding) or deleting it,
and touching the lines of an issued invoice. SQLite relies on the model layer alone."""

from django.db import migrations

FORWARDS = """
CREATE OR REPLACE FUNCTION billing_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER billing_ledgerentry_append_only BEFORE UPDATE OR DELETE ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION billing_refuse_change();
CREATE TRIGGER billing_creditnote_append_only BEFORE UPDATE OR DELETE ON billing_creditnote
    FOR EACH ROW EXECUTE FUNCTION billing_refuse_change();

CREATE OR REPLACE FUNCTION billing_invoice_issued_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'draft' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'issued invoice % cannot be deleted', OLD.invoice_no USING ERRCODE = 'restrict_violation';
    END IF;
    -- After issue only the payment and voiding may change.
    IF (to_jsonb(NEW) - 'status' - 'paid_at') IS DISTINCT FROM (to_jsonb(OLD) - 'status' - 'paid_at') THEN
        RAISE EXCEPTION 'issued invoice % cannot change', OLD.invoice_no USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER billing_invoice_issued_is_final BEFORE UPDATE OR DELETE ON billing_invoice
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_issued_is_final();

CREATE OR REPLACE FUNCTION billing_invoiceline_of_draft_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    invoice_status text;
BEGIN
    SELECT status INTO invoice_status FROM billing_invoice
        WHERE id = CASE WHEN TG_OP = 'INSERT' THEN NEW.invoice_id ELSE OLD.invoice_id END;
    IF invoice_status IS DISTINCT FROM 'draft' THEN
        RAISE EXCEPTION 'the lines of an issued invoice never change' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE TRIGGER billing_invoiceline_of_draft_only BEFORE INSERT OR UPDATE OR DELETE ON billing_invoiceline
    FOR EACH ROW EXECUTE FUNCTION billing_invoiceline_of_draft_only();
"""

BACKWARDS = """
DROP TRIGGER IF EXISTS billing_invoiceline_of_draft_only ON billing_invoiceline;
DROP FUNCTION IF EXISTS billing_invoiceline_of_draft_only();
DROP TRIGGER IF EXISTS billing_invoice_issued_is_final ON billing_invoice;
DROP FUNCTION IF EXISTS billing_invoice_issued_is_final();
DROP TRIGGER IF EXISTS billing_creditnote_append_only ON billing_creditnote;
DROP TRIGGER IF EXISTS billing_ledgerentry_append_only ON billing_ledgerentry;
DROP FUNCTION IF EXISTS billing_refuse_change();
"""


def _on_postgresql(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)  # the SQL holds % signs: no placeholders
    return run


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_ledger_from_grants")]

    operations = [migrations.RunPython(_on_postgresql(FORWARDS), _on_postgresql(BACKWARDS))]
