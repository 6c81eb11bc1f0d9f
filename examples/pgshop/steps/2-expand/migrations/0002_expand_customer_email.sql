-- conveyor: expand
-- Orders name their customer by email from version 2 on. Version 1 still writes `customer`
-- (it may come back by a rollback); the trigger fills whichever column a version left out,
-- so both versions run against this schema.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS customer_email text;

CREATE OR REPLACE FUNCTION orders_sync_customer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.customer_email := coalesce(NEW.customer_email, NEW.customer);
    NEW.customer := coalesce(NEW.customer, NEW.customer_email);
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER orders_sync_customer BEFORE INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_sync_customer();

UPDATE orders SET customer_email = customer WHERE customer_email IS NULL;

-- CONCURRENTLY: writers are not blocked while the index is built.
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_customer_email ON orders (customer_email);
