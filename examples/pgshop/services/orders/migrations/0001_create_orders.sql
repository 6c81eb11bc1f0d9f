-- conveyor: expand
CREATE TABLE IF NOT EXISTS orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item text NOT NULL,
    customer text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
