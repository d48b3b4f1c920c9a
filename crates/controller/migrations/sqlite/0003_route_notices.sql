-- Keeps the migration numbers of both backends equal (PostgreSQL changes its route triggers here).
SELECT 1;
