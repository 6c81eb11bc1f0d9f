-- Undoes 0002: run on purpose with `conveyor migrate undo orders 0002_expand_customer_email`.
DROP TRIGGER IF EXISTS orders_sync_customer ON orders;
DROP FUNCTION IF EXISTS orders_sync_customer();
DROP INDEX CONCURRENTLY IF EXISTS orders_customer_email;
ALTER TABLE orders DROP COLUMN IF EXISTS customer_email;
