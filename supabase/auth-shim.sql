-- Supabase's roles and auth helpers for a database that is not Supabase (plain
-- PostgreSQL or embedded PGlite). Applied only when auth.uid() is missing; safe to
-- run again and from several processes at once.
DO $$
DECLARE
  role_name text;
BEGIN
  FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', role_name);
      END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL; -- another process created it first
    END;
  END LOOP;
  BEGIN
    ALTER ROLE service_role BYPASSRLS;
  EXCEPTION WHEN insufficient_privilege THEN
    NULL;
  END;
  -- The connecting user must be able to SET ROLE to each of them.
  BEGIN
    EXECUTE format('GRANT anon, authenticated, service_role TO %I', current_user);
  EXCEPTION WHEN OTHERS THEN
    NULL;
  END;
END $$;

CREATE SCHEMA IF NOT EXISTS auth;

CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;

CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE AS $$
  SELECT nullif(auth.jwt() ->> 'sub', '')::uuid
$$;

CREATE OR REPLACE FUNCTION auth.role() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT nullif(auth.jwt() ->> 'role', '')
$$;

GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA auth TO anon, authenticated, service_role;
