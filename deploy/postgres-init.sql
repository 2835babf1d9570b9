-- The compose profile `postgres` gives each service its own database.
CREATE DATABASE msc_billing;
