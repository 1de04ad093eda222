-- First start of the PostgreSQL container (docker-entrypoint-initdb.d).
-- The eslab binary creates and migrates its own schema (ESLAB_SCHEMA) on
-- start, and the relay and worker create their tables; this only prepares
-- the schema and the role's defaults so every container agrees on them.
CREATE SCHEMA IF NOT EXISTS eslab AUTHORIZATION eslab;
ALTER ROLE eslab SET search_path = eslab, public;
