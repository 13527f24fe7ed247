-- Ready-made analyst queries for the warehouse (tables: CONTRACT.md; semantics: docs/domain.md "Warehouse"). Each runs unchanged on SQLite and PostgreSQL
-- (tests/test_warehouse.py runs every block on both). Blocks start with `-- name: <name>`.

-- name: coverage_trend_per_region
-- Coverage over the stream's event-time clock, one row per region and snapshot.
SELECT s.region_code, r.name, s.as_of, s.registered, s.active, s.coverage_ratio, s.quota_used, s.quota_total
FROM region_snapshot s JOIN dim_region r ON r.region_code = s.region_code
ORDER BY s.region_code, s.as_of;

-- name: claims_by_programme_per_month
-- Claims per programme and month: count of every claim event, and the amount actually paid.
SELECT c.event_month, c.program, p.name AS program_name, count(*) AS claims,
       sum(CASE WHEN c.status = 'PAID' THEN c.amount_idr ELSE 0 END) AS paid_idr
FROM fact_claim c JOIN dim_program p ON p.program = c.program
GROUP BY c.event_month, c.program, p.name
ORDER BY c.event_month, c.program;

-- name: registrations_per_region_per_month
-- New registrations per region, month and cohort (the enrolment pace officials watch).
SELECT f.region_code, r.name, f.event_month, f.cohort, count(*) AS registrations
FROM fact_registration f JOIN dim_region r ON r.region_code = f.region_code
GROUP BY f.region_code, r.name, f.event_month, f.cohort
ORDER BY f.region_code, f.event_month, f.cohort;

-- name: contributions_paid_per_region_per_period
-- Contributions received per region and contribution period, by who pays.
SELECT region_code, period, funding_source, count(*) AS payments, sum(amount_idr) AS amount_idr,
       count(DISTINCT participant_key) AS payers
FROM fact_contribution
GROUP BY region_code, period, funding_source
ORDER BY region_code, period, funding_source;
