-- OrleansStorage schema for the Orleans ADO.NET providers we use, on PostgreSQL 15.
--
-- The providers (Microsoft.Orleans.Clustering.AdoNet and .Persistence.AdoNet, 10.4.x) ship no
-- SQL: at start they read "SELECT QueryKey, QueryText FROM OrleansQuery" and then run those
-- texts with named parameters, reading results by column name. This file defines the tables
-- behind them and the query texts, written for this project. The contract it honours:
--   * every query key each provider asks for exists (a missing one fails silo start-up);
--   * parameter names (@DeploymentId, @GrainIdHash, ...) and result column names are exact;
--   * "boolean" queries return one row with one integer column, > 0 meaning success;
--   * optimistic concurrency: a write whose version does not match changes nothing.
--
-- Idempotent: safe to apply on every start (CREATE ... IF NOT EXISTS, query rows upserted).
-- Parameters are cast explicitly because Npgsql sends NULL parameters untyped.

CREATE TABLE IF NOT EXISTS OrleansQuery
(
    QueryKey  varchar(64)   NOT NULL PRIMARY KEY,
    QueryText varchar(8000) NOT NULL
);

------------------------------------------------------------------------------------------------
-- Cluster membership (Orleans.Clustering.AdoNet)
------------------------------------------------------------------------------------------------

-- One row per cluster (Orleans calls it a deployment): the membership table's version, which
-- every membership change must bump atomically with the row it changes.
CREATE TABLE IF NOT EXISTS ostor_membership_version
(
    deployment_id varchar(150) NOT NULL PRIMARY KEY,
    version       integer      NOT NULL DEFAULT 0,
    changed_at    timestamptz  NOT NULL DEFAULT now()
);

-- One row per silo incarnation (address, port, generation).
CREATE TABLE IF NOT EXISTS ostor_membership
(
    deployment_id   varchar(150)  NOT NULL REFERENCES ostor_membership_version (deployment_id),
    address         varchar(45)   NOT NULL,
    port            integer       NOT NULL,
    generation      integer       NOT NULL,
    silo_name       varchar(150)  NOT NULL,
    host_name       varchar(150)  NOT NULL,
    status          integer       NOT NULL,
    proxy_port      integer,
    suspect_times   varchar(8000),
    start_time      timestamptz   NOT NULL,
    i_am_alive_time timestamptz   NOT NULL,
    PRIMARY KEY (deployment_id, address, port, generation)
);

INSERT INTO OrleansQuery (QueryKey, QueryText) VALUES
('InsertMembershipVersionKey', '
    WITH created AS (
        INSERT INTO ostor_membership_version (deployment_id)
        VALUES (@DeploymentId::varchar)
        ON CONFLICT (deployment_id) DO NOTHING
        RETURNING 1)
    SELECT count(*)::integer FROM created'),

-- Insert a silo row only when the caller saw the current table version, bumping it in the same statement.
('InsertMembershipKey', '
    WITH bumped AS (
        UPDATE ostor_membership_version
        SET version = version + 1, changed_at = now()
        WHERE deployment_id = @DeploymentId::varchar
          AND version = @Version::integer
          AND NOT EXISTS (SELECT 1 FROM ostor_membership m
                          WHERE m.deployment_id = @DeploymentId::varchar AND m.address = @Address::varchar
                            AND m.port = @Port::integer AND m.generation = @Generation::integer)
        RETURNING deployment_id),
    inserted AS (
        INSERT INTO ostor_membership (deployment_id, address, port, generation, silo_name, host_name,
                                      status, proxy_port, start_time, i_am_alive_time)
        SELECT deployment_id, @Address::varchar, @Port::integer, @Generation::integer, @SiloName::varchar,
               @HostName::varchar, @Status::integer, @ProxyPort::integer, @StartTime::timestamptz,
               @IAmAliveTime::timestamptz
        FROM bumped
        RETURNING 1)
    SELECT count(*)::integer FROM inserted'),

-- Update a silo row only when the caller saw the current table version, bumping it in the same statement.
('UpdateMembershipKey', '
    WITH bumped AS (
        UPDATE ostor_membership_version
        SET version = version + 1, changed_at = now()
        WHERE deployment_id = @DeploymentId::varchar
          AND version = @Version::integer
          AND EXISTS (SELECT 1 FROM ostor_membership m
                      WHERE m.deployment_id = @DeploymentId::varchar AND m.address = @Address::varchar
                        AND m.port = @Port::integer AND m.generation = @Generation::integer)
        RETURNING deployment_id),
    updated AS (
        UPDATE ostor_membership m
        SET status = @Status::integer,
            suspect_times = @SuspectTimes::varchar,
            i_am_alive_time = @IAmAliveTime::timestamptz
        FROM bumped
        WHERE m.deployment_id = bumped.deployment_id AND m.address = @Address::varchar
          AND m.port = @Port::integer AND m.generation = @Generation::integer
        RETURNING 1)
    SELECT count(*)::integer FROM updated'),

('UpdateIAmAlivetimeKey', '
    UPDATE ostor_membership
    SET i_am_alive_time = @IAmAliveTime::timestamptz
    WHERE deployment_id = @DeploymentId::varchar AND address = @Address::varchar
      AND port = @Port::integer AND generation = @Generation::integer'),

-- The version row is always returned (outer join) so Orleans learns the table version even when empty.
('MembershipReadRowKey', '
    SELECT v.deployment_id AS "DeploymentId", m.address AS "Address", m.port AS "Port",
           m.generation AS "Generation", m.silo_name AS "SiloName", m.host_name AS "HostName",
           m.status AS "Status", m.proxy_port AS "ProxyPort", m.suspect_times AS "SuspectTimes",
           m.start_time AS "StartTime", m.i_am_alive_time AS "IAmAliveTime", v.version AS "Version"
    FROM ostor_membership_version v
    LEFT JOIN ostor_membership m
           ON m.deployment_id = v.deployment_id AND m.address = @Address::varchar
          AND m.port = @Port::integer AND m.generation = @Generation::integer
    WHERE v.deployment_id = @DeploymentId::varchar'),

('MembershipReadAllKey', '
    SELECT v.deployment_id AS "DeploymentId", m.address AS "Address", m.port AS "Port",
           m.generation AS "Generation", m.silo_name AS "SiloName", m.host_name AS "HostName",
           m.status AS "Status", m.proxy_port AS "ProxyPort", m.suspect_times AS "SuspectTimes",
           m.start_time AS "StartTime", m.i_am_alive_time AS "IAmAliveTime", v.version AS "Version"
    FROM ostor_membership_version v
    LEFT JOIN ostor_membership m ON m.deployment_id = v.deployment_id
    WHERE v.deployment_id = @DeploymentId::varchar'),

('DeleteMembershipTableEntriesKey', '
    DELETE FROM ostor_membership WHERE deployment_id = @DeploymentId::varchar;
    DELETE FROM ostor_membership_version WHERE deployment_id = @DeploymentId::varchar'),

('GatewaysQueryKey', '
    SELECT address AS "Address", proxy_port AS "ProxyPort", generation AS "Generation"
    FROM ostor_membership
    WHERE deployment_id = @DeploymentId::varchar AND status = @Status::integer AND proxy_port > 0'),

-- Only rows of dead silos (status 6) are ever removed.
('CleanupDefunctSiloEntriesKey', '
    DELETE FROM ostor_membership
    WHERE deployment_id = @DeploymentId::varchar AND i_am_alive_time < @IAmAliveTime::timestamptz
      AND status = 6'),

('CleanupDefunctSiloEntryKey', '
    DELETE FROM ostor_membership
    WHERE deployment_id = @DeploymentId::varchar AND address = @Address::varchar
      AND port = @Port::integer AND generation = @Generation::integer AND status = 6')
ON CONFLICT (QueryKey) DO UPDATE SET QueryText = EXCLUDED.QueryText;

------------------------------------------------------------------------------------------------
-- Grain state (Orleans.Persistence.AdoNet): the management service's cluster map and the
-- stream pub-sub state ("PubSubStore") both live here.
------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS ostor_grain_state
(
    service_id      varchar(150) NOT NULL,
    grain_type      varchar(512) NOT NULL,
    grain_id_n0     bigint       NOT NULL,
    grain_id_n1     bigint       NOT NULL,
    -- the string part of the key; '' when the grain has none, so it can sit in the primary key
    grain_id_ext    varchar(512) NOT NULL,
    grain_id_hash   integer      NOT NULL,
    grain_type_hash integer      NOT NULL,
    payload         bytea,
    version         integer      NOT NULL,
    modified_at     timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (service_id, grain_type, grain_id_n0, grain_id_n1, grain_id_ext)
);

INSERT INTO OrleansQuery (QueryKey, QueryText) VALUES
('ReadFromStorageKey', '
    SELECT payload AS "PayloadBinary", version AS "Version"
    FROM ostor_grain_state
    WHERE service_id = @ServiceId::varchar AND grain_type = @GrainTypeString::varchar
      AND grain_id_n0 = @GrainIdN0::bigint AND grain_id_n1 = @GrainIdN1::bigint
      AND grain_id_ext = coalesce(@GrainIdExtensionString::varchar, '''')
      AND grain_id_hash = @GrainIdHash::integer AND grain_type_hash = @GrainTypeHash::integer'),

-- First write (no version known): insert version 1 unless a row exists. Later writes: update only
-- when the version matches. Returns the new version, or NULL on a conflict (Orleans then raises
-- InconsistentStateException).
('WriteToStorageKey', '
    WITH updated AS (
        UPDATE ostor_grain_state
        SET payload = @PayloadBinary::bytea, version = version + 1, modified_at = now()
        WHERE @GrainStateVersion::integer IS NOT NULL
          AND service_id = @ServiceId::varchar AND grain_type = @GrainTypeString::varchar
          AND grain_id_n0 = @GrainIdN0::bigint AND grain_id_n1 = @GrainIdN1::bigint
          AND grain_id_ext = coalesce(@GrainIdExtensionString::varchar, '''')
          AND version = @GrainStateVersion::integer
        RETURNING version),
    inserted AS (
        INSERT INTO ostor_grain_state (service_id, grain_type, grain_id_n0, grain_id_n1, grain_id_ext,
                                       grain_id_hash, grain_type_hash, payload, version)
        SELECT @ServiceId::varchar, @GrainTypeString::varchar, @GrainIdN0::bigint, @GrainIdN1::bigint,
               coalesce(@GrainIdExtensionString::varchar, ''''), @GrainIdHash::integer,
               @GrainTypeHash::integer, @PayloadBinary::bytea, 1
        WHERE @GrainStateVersion::integer IS NULL
        ON CONFLICT DO NOTHING
        RETURNING version)
    SELECT (SELECT version FROM updated UNION ALL SELECT version FROM inserted LIMIT 1) AS "NewGrainStateVersion"'),

('ClearStorageKey', '
    UPDATE ostor_grain_state
    SET payload = NULL, version = version + 1, modified_at = now()
    WHERE service_id = @ServiceId::varchar AND grain_type = @GrainTypeString::varchar
      AND grain_id_n0 = @GrainIdN0::bigint AND grain_id_n1 = @GrainIdN1::bigint
      AND grain_id_ext = coalesce(@GrainIdExtensionString::varchar, '''')
      AND version = @GrainStateVersion::integer
    RETURNING version AS "Version"'),

('DeleteStorageKey', '
    DELETE FROM ostor_grain_state
    WHERE service_id = @ServiceId::varchar AND grain_type = @GrainTypeString::varchar
      AND grain_id_n0 = @GrainIdN0::bigint AND grain_id_n1 = @GrainIdN1::bigint
      AND grain_id_ext = coalesce(@GrainIdExtensionString::varchar, '''')
      AND version = @GrainStateVersion::integer
    RETURNING version AS "Version"')
ON CONFLICT (QueryKey) DO UPDATE SET QueryText = EXCLUDED.QueryText;

------------------------------------------------------------------------------------------------
-- The cluster's identity (OrleansStorage's own, not an Orleans provider's): which cluster this
-- database holds the map of, and which Orleans deployment (ClusterId) runs it. Written once, with
-- the first map or by 'ostor cluster recover-map'; read by every silo before it starts.
------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS ostor_cluster_identity
(
    service_id         varchar(150) NOT NULL PRIMARY KEY,
    cluster_id         uuid         NOT NULL,
    orleans_cluster_id varchar(150) NOT NULL,
    created_at         timestamptz  NOT NULL
);
