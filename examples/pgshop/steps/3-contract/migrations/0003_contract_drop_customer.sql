-- conveyor: contract after 0002_expand_customer_email
-- Version 1 is the only code that needs `customer`; Conveyor refuses this while any
-- environment runs it or keeps it as a rollback target.
DROP TRIGGER IF EXISTS orders_sync_customer ON orders;
DROP FUNCTION IF EXISTS orders_sync_customer();
ALTER TABLE orders DROP COLUMN IF EXISTS customer;
