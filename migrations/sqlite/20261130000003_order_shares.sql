-- An order may answer a share (as migrations/postgres/20261130000003).
ALTER TABLE orders ADD COLUMN share_id BLOB REFERENCES vendor_shares (id) ON DELETE SET NULL;
CREATE INDEX orders_share_id_idx ON orders (share_id);
