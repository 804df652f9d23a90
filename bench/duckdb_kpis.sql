-- The KPI report written as DuckDB SQL, for bench/bench_report.py and the parity test.
--
-- Same semantics as the polars pipeline (kpi.sources -> kpi.lifecycle -> kpi.kpis) on a
-- data folder of typed Parquet files: row validation (required fields, known event
-- types, fields required on some events), de-duplication of event_id (first read
-- wins), the lifecycle tie rules, the service-standard deadline and every KPI family.
-- Dollar-brace placeholders are filled in by bench_report.py (string.Template); statements
-- are separated by "-- @name" lines and run in order; "query_*" statements return
-- the answers. Time zone of the session is UTC (day buckets in UTC).

-- @settings
SET TimeZone = 'UTC';

-- @event_names
CREATE OR REPLACE TEMP TABLE event_names(name VARCHAR, event VARCHAR, stage BIGINT);
INSERT INTO event_names VALUES ${event_names};

-- @raw_events
-- Good rows of every events file, mirroring kpi.sources.validate for typed columns:
-- strings are stripped (blank = missing), event names and UPU aliases are matched
-- case-insensitively, required fields must be present.
CREATE OR REPLACE TEMP VIEW validated_events AS
WITH raw AS (
    SELECT
        NULLIF(trim(CAST(event_id AS VARCHAR), ${ws}), '') AS event_id,
        NULLIF(trim(CAST(item_id AS VARCHAR), ${ws}), '') AS item_id,
        lower(NULLIF(trim(CAST(event AS VARCHAR), ${ws}), '')) AS event_name,
        ts,
        NULLIF(trim(CAST(facility AS VARCHAR), ${ws}), '') AS facility,
        NULLIF(trim(CAST(product AS VARCHAR), ${ws}), '') AS product,
        NULLIF(trim(CAST(origin AS VARCHAR), ${ws}), '') AS origin,
        NULLIF(trim(CAST(destination AS VARCHAR), ${ws}), '') AS destination,
        promised_by,
        NULLIF(trim(CAST(reason AS VARCHAR), ${ws}), '') AS reason,
        filename AS _file,
        file_row_number AS _row
    FROM read_parquet(${events_files}, filename = true, file_row_number = true, union_by_name = true)
)
SELECT raw.* EXCLUDE (event_name), n.event, n.stage
FROM raw JOIN event_names n ON raw.event_name = n.name
WHERE raw.event_id IS NOT NULL AND raw.item_id IS NOT NULL AND raw.ts IS NOT NULL
  AND raw.facility IS NOT NULL
  AND (n.event <> 'accepted'
       OR (raw.product IS NOT NULL AND raw.origin IS NOT NULL AND raw.destination IS NOT NULL))
  AND (n.event <> 'delivery_failed' OR raw.reason IS NOT NULL);

-- The "lean" variant trusts the typed Parquet (clean strings, canonical event names,
-- no rejects): what an analyst would write for generator data. Checked to give the
-- same numbers on such data only.
CREATE OR REPLACE TEMP VIEW lean_events AS
SELECT event_id, item_id, ts, facility, product, origin, destination, promised_by, reason,
       filename AS _file, file_row_number AS _row,
       CAST(event AS VARCHAR) AS event, list_position(${stages}, CAST(event AS VARCHAR)) - 1 AS stage
FROM read_parquet(${events_files}, filename = true, file_row_number = true, union_by_name = true);

-- @events
-- One row per event_id: the first read (files in name order, then row order) wins.
CREATE OR REPLACE TEMP VIEW events AS
${dedupe_sql};

-- @bounds
CREATE OR REPLACE TEMP TABLE bounds AS
SELECT min(ts) AS first_ts, coalesce(${as_of}, max(ts)) AS as_of FROM events;

-- @state
-- The lifecycle state (kpi.lifecycle.build_state): keys pack the stage below the
-- microsecond timestamp; struct min/max give the documented tie rules.
CREATE OR REPLACE TEMP TABLE state AS
WITH e AS (
    SELECT *, epoch_us(ts) * 8 + stage AS k
    FROM events
    WHERE ts <= (SELECT as_of FROM bounds)
)
SELECT
    item_id,
    min(struct_pack(ts := ts, id := event_id, product := product, origin := origin,
                    destination := destination, promised := promised_by))
        FILTER (WHERE event = 'accepted') AS acc,
    min(k) FILTER (WHERE event IN ('delivered', 'delivery_failed')) AS attempt_key,
    min(ts) FILTER (WHERE event = 'delivered') AS delivered_at,
    min(ts) FILTER (WHERE event = 'returned') AS returned_at,
    max(struct_pack(k := k, f := facility)) AS last
FROM e
GROUP BY item_id;

-- @standards
CREATE OR REPLACE TEMP TABLE standards(
    product VARCHAR, tz VARCHAR, cutoff TIME, same_days INTEGER, other_days INTEGER,
    remote_days INTEGER, cal INTEGER
);
INSERT INTO standards VALUES ${standards};

-- @calendar
-- Counting days of each working-day calendar: ord numbers counting days; roll_ord is
-- the ord of the first counting day on or after d (add_business_days roll="forward").
CREATE OR REPLACE TEMP TABLE week_masks(cal INTEGER, dow INTEGER);
${week_masks_insert}
CREATE OR REPLACE TEMP TABLE holidays(cal INTEGER, d DATE);
${holidays_insert}
CREATE OR REPLACE TEMP TABLE calendar AS
WITH days AS (
    SELECT c.cal, CAST(g.d AS DATE) AS d
    FROM (SELECT DISTINCT cal FROM standards WHERE cal IS NOT NULL) c,
         generate_series(
             CAST((SELECT min(acc.ts) FROM state) AS DATE) - 10,
             CAST((SELECT max(acc.ts) FROM state) AS DATE) + 150,
             INTERVAL 1 DAY
         ) g(d)
), flagged AS (
    SELECT days.cal, days.d,
           m.dow IS NOT NULL AND h.d IS NULL AS counting
    FROM days
    LEFT JOIN week_masks m ON m.cal = days.cal AND m.dow = isodow(days.d)
    LEFT JOIN holidays h ON h.cal = days.cal AND h.d = days.d
)
SELECT cal, d, counting,
       sum(CAST(counting AS INTEGER)) OVER (PARTITION BY cal ORDER BY d) AS ord
FROM flagged;

-- @lifecycle
-- The lifecycle table (kpi.lifecycle.lifecycle) with the promise of the standard.
CREATE OR REPLACE TEMP TABLE lifecycle AS
WITH s AS (
    SELECT
        state.item_id,
        state.acc.ts AS accepted_at,
        state.acc.product AS product,
        state.acc.origin AS origin,
        state.acc.destination AS destination,
        state.acc.promised AS promised_by_given,
        state.attempt_key,
        state.delivered_at,
        state.returned_at,
        state.last.k AS last_key,
        state.last.f AS last_facility,
        std.cal,
        std.tz,
        CAST(timezone(std.tz, state.acc.ts) AS DATE)
            + CASE WHEN CAST(timezone(std.tz, state.acc.ts) AS TIME) > std.cutoff THEN 1 ELSE 0 END
            AS deposit_day,
        CASE WHEN state.acc.destination IN (${remote_regions}) THEN std.remote_days
             WHEN state.acc.origin = state.acc.destination THEN std.same_days
             ELSE std.other_days END AS n_days
    FROM state LEFT JOIN standards std ON std.product = state.acc.product
), d AS (
    SELECT s.*,
           CASE WHEN s.cal IS NULL THEN s.deposit_day + s.n_days ELSE c2.d END AS last_day
    FROM s
    LEFT JOIN calendar c1 ON c1.cal = s.cal AND c1.d = s.deposit_day
    LEFT JOIN calendar c2 ON c2.cal = s.cal AND c2.counting
        AND c2.ord = c1.ord + CASE WHEN c1.counting THEN 0 ELSE 1 END + s.n_days
)
SELECT
    item_id, accepted_at, product, origin, destination,
    coalesce(promised_by_given,
             timezone(tz, CAST(last_day + 1 AS TIMESTAMP)) - INTERVAL 1 MICROSECOND) AS promised_by,
    CAST(make_timestamp(attempt_key // 8) AS TIMESTAMPTZ) AS first_attempt_at,
    ${stages}[attempt_key % 8 + 1] AS first_attempt_outcome,
    delivered_at,
    returned_at,
    ${stages}[last_key % 8 + 1] AS last_event,
    CAST(make_timestamp(last_key // 8) AS TIMESTAMPTZ) AS last_event_at,
    last_facility,
    delivered_at IS NOT NULL OR returned_at IS NOT NULL AS finished
FROM d;

-- @complaints
-- Latest version of each complaint (greatest updated_at, nulls first; then last read).
CREATE OR REPLACE TEMP TABLE complaints AS
WITH raw AS (
    SELECT
        NULLIF(trim(CAST(complaint_id AS VARCHAR), ${ws}), '') AS complaint_id,
        opened_at,
        lower(NULLIF(trim(CAST(category AS VARCHAR), ${ws}), '')) AS category,
        NULLIF(trim(CAST(item_id AS VARCHAR), ${ws}), '') AS item_id,
        NULLIF(trim(CAST(region AS VARCHAR), ${ws}), '') AS region,
        NULLIF(trim(CAST(product AS VARCHAR), ${ws}), '') AS product,
        valid, resolved_at, updated_at,
        filename AS _file, file_row_number AS _row
    FROM read_parquet(${complaints_files}, filename = true, file_row_number = true, union_by_name = true)
), good AS (
    SELECT * FROM raw
    WHERE complaint_id IS NOT NULL AND opened_at IS NOT NULL AND region IS NOT NULL
      AND category IN (${categories})
)
SELECT unnest(arg_max(good, struct_pack(u := coalesce(updated_at, '-infinity'::TIMESTAMPTZ),
                                       f := _file, r := _row)))
FROM good
GROUP BY complaint_id;

-- @facilities
CREATE OR REPLACE TEMP TABLE facilities AS
SELECT facility, type, region, TRY_CAST(backlog_threshold AS BIGINT) AS backlog_threshold
FROM ${facilities_source};

-- @window
CREATE OR REPLACE TEMP TABLE win AS
SELECT first_ts AS w_start, as_of + INTERVAL 1 MICROSECOND AS w_end, as_of,
       as_of - INTERVAL 7 DAY AS deadline_cut
FROM bounds;

-- @query_default
-- KpiQuery(): every KPI over the whole window, as of the latest event.
WITH w AS (SELECT * FROM win),
lc AS (SELECT * FROM lifecycle),
flow AS (
    SELECT
        count(*) FILTER (WHERE accepted_at IS NOT NULL AND accepted_at <= w.as_of
                         AND accepted_at >= w.w_start AND accepted_at < w.w_end) AS accepted_items,
        count(*) FILTER (WHERE dl) AS delivered_items,
        count(*) FILTER (WHERE dl AND accepted_at IS NULL) AS delivered_without_acceptance,
        count(*) FILTER (WHERE returned_at IS NOT NULL AND returned_at <= w.as_of
                         AND returned_at >= w.w_start AND returned_at < w.w_end) AS returned_items,
        count(*) FILTER (WHERE dl AND judged AND late_h <= 0) AS on_time_items,
        count(*) FILTER (WHERE dl AND judged) AS judged,
        count(*) FILTER (WHERE dl AND judged AND late_h > 0 AND late_h <= 24) AS late_1d_items,
        count(*) FILTER (WHERE dl AND judged AND late_h > 24 AND late_h <= 48) AS late_2d_items,
        count(*) FILTER (WHERE dl AND judged AND late_h > 48) AS late_3d_plus_items,
        avg(transit_h) FILTER (WHERE dl AND accepted_at IS NOT NULL) AS transit_hours_mean,
        quantile_cont(transit_h, 0.5) FILTER (WHERE dl AND accepted_at IS NOT NULL) AS transit_hours_p50,
        quantile_cont(transit_h, 0.9) FILTER (WHERE dl AND accepted_at IS NOT NULL) AS transit_hours_p90,
        count(*) FILTER (WHERE dl AND accepted_at IS NOT NULL AND transit_h <= 72) AS within_72h,
        count(*) FILTER (WHERE dl AND accepted_at IS NOT NULL) AS transit_n,
        count(*) FILTER (WHERE fa AND first_attempt_outcome = 'delivered') AS first_ok,
        count(*) FILTER (WHERE fa) AS first_n
    FROM (
        SELECT lc.*,
               delivered_at IS NOT NULL AND delivered_at <= w.as_of AND delivered_at >= w.w_start
                   AND delivered_at < w.w_end AS dl,
               first_attempt_at IS NOT NULL AND first_attempt_at <= w.as_of
                   AND first_attempt_at >= w.w_start AND first_attempt_at < w.w_end AS fa,
               accepted_at IS NOT NULL AND promised_by IS NOT NULL AS judged,
               CAST(epoch_us(delivered_at) - epoch_us(promised_by) AS DOUBLE) / 3600000000 AS late_h,
               CAST(epoch_us(delivered_at) - epoch_us(accepted_at) AS DOUBLE) / 3600000000 AS transit_h
        FROM lc, w
    ) x, w
),
cmp AS (
    SELECT
        count(*) AS complaints,
        count(*) FILTER (WHERE valid) AS valid_complaints,
        count(*) FILTER (WHERE due AND resolved_at IS NOT NULL AND resolved_at <= w.as_of
                         AND resolved_at - opened_at <= INTERVAL 7 DAY) AS resolved_7d,
        count(*) FILTER (WHERE due) AS due_n
    FROM (
        SELECT c.*, c.opened_at + INTERVAL 7 DAY <= w.as_of AS due
        FROM complaints c, w
        WHERE c.opened_at <= w.as_of AND c.opened_at >= w.w_start AND c.opened_at < w.w_end
    ) c, w
),
waiting AS (
    SELECT lc.last_facility, f.type AS facility_type, f.region AS facility_region,
           CAST(epoch_us(w.as_of) - epoch_us(lc.last_event_at) AS DOUBLE) / 3600000000 AS age_hours
    FROM lc LEFT JOIN facilities f ON f.facility = lc.last_facility, w
    WHERE NOT lc.finished AND lc.last_event IN ('arrived', 'delivery_failed')
),
backlog AS (
    SELECT
        count(*) AS backlog_items,
        max(age_hours) AS backlog_oldest_hours,
        count(*) FILTER (WHERE age_hours < 6) AS backlog_items_lt_6h,
        count(*) FILTER (WHERE age_hours >= 6 AND age_hours < 12) AS backlog_items_6h_12h,
        count(*) FILTER (WHERE age_hours >= 12 AND age_hours < 24) AS backlog_items_12h_24h,
        count(*) FILTER (WHERE age_hours >= 24 AND age_hours < 48) AS backlog_items_24h_48h,
        count(*) FILTER (WHERE age_hours >= 48 OR age_hours IS NULL) AS backlog_items_ge_48h
    FROM waiting
),
per_facility AS (
    SELECT last_facility, count(*) AS n FROM waiting GROUP BY last_facility
),
thresholds AS (
    SELECT
        CASE WHEN count(f.backlog_threshold) > 0 THEN sum(f.backlog_threshold) END
            AS backlog_threshold_items,
        coalesce(sum(CAST(coalesce(p.n, 0) > f.backlog_threshold AS BIGINT)), 0)
            AS backlog_over_threshold
    FROM facilities f LEFT JOIN per_facility p ON p.last_facility = f.facility
),
network AS (
    SELECT
        count(*) AS in_network_items,
        count(*) FILTER (WHERE promised_by < w.as_of) AS overdue_items,
        count(*) FILTER (WHERE CAST(epoch_us(w.as_of) - epoch_us(last_event_at) AS DOUBLE)
                         / 3600000000 > ${stall_hours}) AS stalled_items
    FROM lc, w
    WHERE NOT finished
),
open_c AS (
    SELECT
        count(*) AS open_complaints,
        count(*) FILTER (WHERE opened_at < w.deadline_cut) AS overdue_complaints
    FROM complaints, w
    WHERE opened_at <= w.as_of AND (resolved_at IS NULL OR resolved_at > w.as_of)
)
SELECT
    accepted_items, delivered_items, delivered_without_acceptance, returned_items,
    on_time_items,
    CASE WHEN judged > 0 THEN on_time_items / judged END AS on_time_ratio,
    late_1d_items, late_2d_items, late_3d_plus_items,
    transit_hours_mean, transit_hours_p50, transit_hours_p90,
    CASE WHEN transit_n > 0 THEN within_72h / transit_n END AS within_72h_ratio,
    CASE WHEN first_n > 0 THEN first_ok / first_n END AS first_attempt_ratio,
    complaints, valid_complaints,
    CASE WHEN accepted_items > 0 THEN complaints * 1000000 / accepted_items END
        AS complaints_per_million,
    CASE WHEN due_n > 0 THEN resolved_7d / due_n END AS resolved_within_7d_ratio,
    backlog_items, backlog_oldest_hours, backlog_items_lt_6h, backlog_items_6h_12h,
    backlog_items_12h_24h, backlog_items_24h_48h, backlog_items_ge_48h,
    backlog_threshold_items, backlog_over_threshold,
    in_network_items, overdue_items, stalled_items,
    open_complaints, overdue_complaints
FROM flow, cmp, backlog, thresholds, network, open_c;

-- @query_grouped
-- KpiQuery(by=("destination", "product"), granularity="day"): the flow family per
-- destination, product and UTC day of each counted event (null keys are a group).
WITH w AS (SELECT * FROM win),
lc AS (
    SELECT lc.*,
           CAST(epoch_us(delivered_at) - epoch_us(promised_by) AS DOUBLE) / 3600000000 AS late_h,
           CAST(epoch_us(delivered_at) - epoch_us(accepted_at) AS DOUBLE) / 3600000000 AS transit_h,
           accepted_at IS NOT NULL AND promised_by IS NOT NULL AS judged
    FROM lifecycle lc
),
parts AS (
    SELECT destination, product, date_trunc('day', accepted_at) AS period,
           count(*) AS accepted_items
    FROM lc, w
    WHERE accepted_at IS NOT NULL AND accepted_at <= w.as_of AND accepted_at >= w.w_start
      AND accepted_at < w.w_end
    GROUP BY ALL
    UNION ALL BY NAME
    SELECT destination, product, date_trunc('day', delivered_at) AS period,
           count(*) AS delivered_items,
           count(*) FILTER (WHERE accepted_at IS NULL) AS delivered_without_acceptance,
           count(*) FILTER (WHERE judged AND late_h <= 0) AS on_time_items,
           count(*) FILTER (WHERE judged) AS judged,
           count(*) FILTER (WHERE judged AND late_h > 0 AND late_h <= 24) AS late_1d_items,
           count(*) FILTER (WHERE judged AND late_h > 24 AND late_h <= 48) AS late_2d_items,
           count(*) FILTER (WHERE judged AND late_h > 48) AS late_3d_plus_items,
           avg(transit_h) FILTER (WHERE accepted_at IS NOT NULL) AS transit_hours_mean,
           quantile_cont(transit_h, 0.5) FILTER (WHERE accepted_at IS NOT NULL) AS transit_hours_p50,
           quantile_cont(transit_h, 0.9) FILTER (WHERE accepted_at IS NOT NULL) AS transit_hours_p90,
           count(*) FILTER (WHERE accepted_at IS NOT NULL AND transit_h <= 72) AS within_72h,
           count(*) FILTER (WHERE accepted_at IS NOT NULL) AS transit_n
    FROM lc, w
    WHERE delivered_at IS NOT NULL AND delivered_at <= w.as_of AND delivered_at >= w.w_start
      AND delivered_at < w.w_end
    GROUP BY ALL
    UNION ALL BY NAME
    SELECT destination, product, date_trunc('day', returned_at) AS period,
           count(*) AS returned_items
    FROM lc, w
    WHERE returned_at IS NOT NULL AND returned_at <= w.as_of AND returned_at >= w.w_start
      AND returned_at < w.w_end
    GROUP BY ALL
    UNION ALL BY NAME
    SELECT destination, product, date_trunc('day', first_attempt_at) AS period,
           count(*) FILTER (WHERE first_attempt_outcome = 'delivered') AS first_ok,
           count(*) AS first_n
    FROM lc, w
    WHERE first_attempt_at IS NOT NULL AND first_attempt_at <= w.as_of
      AND first_attempt_at >= w.w_start AND first_attempt_at < w.w_end
    GROUP BY ALL
),
g AS (
    SELECT destination, product, period,
           coalesce(sum(accepted_items), 0) AS accepted_items,
           coalesce(sum(delivered_items), 0) AS delivered_items,
           coalesce(sum(delivered_without_acceptance), 0) AS delivered_without_acceptance,
           coalesce(sum(returned_items), 0) AS returned_items,
           coalesce(sum(on_time_items), 0) AS on_time_items,
           coalesce(sum(judged), 0) AS judged,
           coalesce(sum(late_1d_items), 0) AS late_1d_items,
           coalesce(sum(late_2d_items), 0) AS late_2d_items,
           coalesce(sum(late_3d_plus_items), 0) AS late_3d_plus_items,
           max(transit_hours_mean) AS transit_hours_mean,
           max(transit_hours_p50) AS transit_hours_p50,
           max(transit_hours_p90) AS transit_hours_p90,
           coalesce(sum(within_72h), 0) AS within_72h,
           coalesce(sum(transit_n), 0) AS transit_n,
           coalesce(sum(first_ok), 0) AS first_ok,
           coalesce(sum(first_n), 0) AS first_n
    FROM parts
    GROUP BY destination, product, period
)
SELECT
    destination, product, period,
    accepted_items, delivered_items, delivered_without_acceptance, returned_items,
    on_time_items,
    CASE WHEN judged > 0 THEN on_time_items / judged END AS on_time_ratio,
    late_1d_items, late_2d_items, late_3d_plus_items,
    transit_hours_mean, transit_hours_p50, transit_hours_p90,
    CASE WHEN transit_n > 0 THEN within_72h / transit_n END AS within_72h_ratio,
    CASE WHEN first_n > 0 THEN first_ok / first_n END AS first_attempt_ratio
FROM g
ORDER BY destination NULLS LAST, product NULLS LAST, period NULLS LAST;
