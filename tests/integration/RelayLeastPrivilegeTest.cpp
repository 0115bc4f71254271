// The relay runs as the role schema/outbox.sql creates, outbox_relay: LOGIN REPLICATION, CONNECT on the database,
// SELECT on the outbox table, nothing else (README "Security", "Least privilege: grants per platform"). Each test
// gets a database of its own with the real schema/outbox.sql applied by psql; the roles it creates are
// cluster-wide and may already exist from another database or run, so nothing here assumes it made them. Only SQL
// that PostgreSQL 13 has: the suite runs on every version from 13 to 18.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <regex>
#include <set>

#include "support/RelayProcess.h"
#include "support/SinkProcess.h"
#include "support/TestEnv.h"

using namespace outbox;
using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

constexpr const char* kRelayRole = "outbox_relay";

// The SQLSTATE `sql` fails with, "" when it succeeds.
std::string sqlState(PgConnection& pg, const std::string& sql) {
  PGresult* result = PQexec(pg.raw(), sql.c_str());
  auto status = PQresultStatus(result);
  const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
  std::string out = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK ? "" : (state ? state : "?");
  PQclear(result);
  return out;
}

std::set<std::string> column(PgConnection& pg, const std::string& sql) {
  std::set<std::string> out;
  for (auto& row : pg.rows(sql)) out.insert(row.at(0));
  return out;
}

// A database of its own with a schema file applied (by psql, as PGURL's superuser, as schema/outbox.sql says). When
// the guard goes away: the slots registered are dropped (a logical slot keeps its database from being dropped),
// then the database, then the login roles the test created.
class SchemaDatabase {
 public:
  explicit SchemaDatabase(const std::string& schemaFile = "schema/outbox.sql") : name_(uniqueName("lp")) {
    PgConnection admin(pgUrl());
    admin.exec("CREATE DATABASE " + name_);
    CommandResult r = runCommand(
        {"/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo(), "-f", sourcePath(schemaFile)}, 120s);
    if (!r.status.success()) throw std::runtime_error("psql -f " + schemaFile + " failed: " + r.output);
  }
  ~SchemaDatabase() {
    try {
      PgConnection admin(pgUrl());
      for (const auto& slot : slots_) {
        if (!slotExists(admin, slot)) continue;
        if (!waitFor([&] { return !slotActivePid(admin, slot).has_value(); }, 30s, 200ms)) {
          admin.exec("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active AND slot_name = " +
                     sqlLiteral(slot));
          waitFor([&] { return !slotActivePid(admin, slot).has_value(); }, 30s, 200ms);
        }
        admin.exec("SELECT pg_drop_replication_slot(" + sqlLiteral(slot) + ")");
      }
      admin.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
      for (const auto& role : roles_) admin.exec("DROP ROLE IF EXISTS " + role);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cleanup of database " << name_ << " failed: " << e.what();
    }
  }
  SchemaDatabase(const SchemaDatabase&) = delete;
  SchemaDatabase& operator=(const SchemaDatabase&) = delete;

  const std::string& name() const { return name_; }
  std::string conninfo(const std::string& user = "") const {
    return user.empty() ? pgConninfoWith({{"dbname", name_}}) : pgConninfoWith({{"dbname", name_}, {"user", user}});
  }
  void dropSlotAtEnd(const std::string& slot) { slots_.push_back(slot); }
  // A new LOGIN role, dropped at the end.
  std::string createLoginRole(const std::string& prefix) {
    std::string role = uniqueName(prefix);
    PgConnection admin(pgUrl());
    admin.exec("CREATE ROLE " + role + " LOGIN");
    roles_.push_back(role);
    return role;
  }

 private:
  std::string name_;
  std::vector<std::string> slots_;
  std::vector<std::string> roles_;
};

// Inserts `n` events (aggregate type "order") into public.outbox in one transaction.
void insertEvents(PgConnection& pg, int n, const std::string& tag) {
  pg.exec("INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload) SELECT 'order', '" + tag +
          "-' || g, 'OrderCreated', jsonb_build_object('n', g) FROM generate_series(1, " + std::to_string(n) + ") g");
}

// A relay config reading public.outbox of `db` as outbox_relay.
RelayConfigBuilder relayConfig(SchemaDatabase& db, const std::string& topicPrefix) {
  RelayConfigBuilder config;
  config.conninfo(db.conninfo(kRelayRole));
  config.addOutbox({"public.outbox", topicPrefix + ".{aggregatetype}", {}, {}});
  config.disableMessages();
  config.source("reconnect_backoff_min_ms", "100");
  db.dropSlotAtEnd(config.slot());
  return config;
}

// Inserts events as `writer` and waits until the relay published them all, with the right key, value and headers.
void expectDelivered(PgConnection& writer, PgConnection& admin, const std::string& topicPrefix, ChildProcess& relay) {
  insertEvents(writer, 10, uniqueName("a"));
  insertEvents(writer, 10, uniqueName("b"));
  auto rows = outboxRows(admin, "public.outbox");
  ASSERT_GE(rows.size(), 20u);
  TopicReader reader(kafkaBootstrap(), {topicPrefix + ".order"});
  EXPECT_TRUE(readUntilDelivered(reader, idsOf(rows), 2min)) << relay.logTail();
  auto check = checkDelivery(rows, reader.records(), [&](const OutboxRow&) { return topicPrefix + ".order"; });
  EXPECT_EQ(check.missing, 0) << check.summary();
  EXPECT_EQ(check.wrong, 0) << check.summary();
  EXPECT_EQ(check.unexpected, 0) << check.summary();
}

}  // namespace

// What schema/outbox.sql gives outbox_relay, and nothing more: no superuser, CREATEDB, CREATEROLE or BYPASSRLS, no
// role memberships, no objects, ACL entries only for CONNECT on the database and SELECT on public.outbox; it cannot
// write to the outbox, emit messages or create a publication. As that role, with create_publication = false, the
// relay creates its slot, streams, reads the lag probe's pg_current_wal_lsn() and delivers events that a service
// granted outbox_writer inserted.
TEST(RelayLeastPrivilege, TheSchemaRoleHasOnlyItsGrantsAndTheRelayDeliversAsIt) {
  SchemaDatabase db;
  PgConnection admin(db.conninfo());
  auto attributes = admin.rows(
      "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication, rolcanlogin FROM pg_roles WHERE "
      "rolname = 'outbox_relay'");
  ASSERT_EQ(attributes.size(), 1u);
  EXPECT_EQ(attributes[0], (std::vector<std::string>{"f", "f", "f", "f", "t", "t"}))
      << "super, createdb, createrole, bypassrls, replication, login";
  EXPECT_EQ(admin.scalar("SELECT count(*) FROM pg_auth_members WHERE member = 'outbox_relay'::regrole"), "0")
      << "member of another role (pg_monitor, pg_read_all_data, ...)";
  EXPECT_EQ(admin.scalar("SELECT count(*) FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass AND refobjid = "
                         "'outbox_relay'::regrole AND deptype = 'o'"),
            "0")
      << "owns an object in some database of the cluster";

  // Every ACL entry naming the role, in this database and on shared objects (other databases left out: the
  // schema file grants CONNECT on each database it is applied in).
  EXPECT_EQ(column(admin,
                   "SELECT CASE WHEN classid = 'pg_class'::regclass THEN 'table ' || objid::regclass::text "
                   "WHEN classid = 'pg_database'::regclass THEN 'database ' || "
                   "(SELECT datname FROM pg_database WHERE oid = objid) "
                   "ELSE classid::regclass::text || ' ' || objid END FROM pg_shdepend "
                   "WHERE refclassid = 'pg_authid'::regclass AND refobjid = 'outbox_relay'::regrole AND deptype = 'a' "
                   "AND (dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) OR (dbid = 0 AND "
                   "NOT (classid = 'pg_database'::regclass AND objid <> "
                   "(SELECT oid FROM pg_database WHERE datname = current_database()))))"),
            (std::set<std::string>{"database " + db.name(), "table outbox"}));
  EXPECT_EQ(column(admin,
                   "SELECT a.privilege_type FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = "
                   "'public.outbox'::regclass AND a.grantee = 'outbox_relay'::regrole"),
            (std::set<std::string>{"SELECT"}));
  EXPECT_EQ(column(admin,
                   "SELECT a.privilege_type FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = "
                   "current_database() AND a.grantee = 'outbox_relay'::regrole"),
            (std::set<std::string>{"CONNECT"}));
  EXPECT_EQ(column(admin,
                   "SELECT table_schema || '.' || table_name || ' ' || privilege_type FROM "
                   "information_schema.role_table_grants WHERE grantee = 'outbox_relay'"),
            (std::set<std::string>{"public.outbox SELECT"}));
  for (const char* privilege : {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}) {
    EXPECT_EQ(
        admin.scalar(std::string("SELECT has_table_privilege('outbox_relay', 'public.outbox', '") + privilege + "')"),
        std::string(privilege) == "SELECT" ? "t" : "f")
        << privilege;
  }
  EXPECT_EQ(admin.scalar("SELECT has_database_privilege('outbox_relay', current_database(), 'CREATE')"), "f");
  auto emitOverloads = admin.rows(
      "SELECT p.oid::regprocedure::text, has_function_privilege('outbox_relay', p.oid, 'EXECUTE') FROM pg_proc p "
      "WHERE p.proname = 'pg_logical_emit_message' AND p.pronamespace = 'pg_catalog'::regnamespace");
  EXPECT_GE(emitOverloads.size(), 2u) << "text and bytea content";
  for (auto& overload : emitOverloads) EXPECT_EQ(overload.at(1), "f") << overload.at(0);

  // The same, tried as the role itself.
  PgConnection asRelay(db.conninfo(kRelayRole));
  EXPECT_EQ(sqlState(asRelay, "SELECT count(*) FROM public.outbox"), "");
  EXPECT_EQ(
      sqlState(asRelay, "INSERT INTO public.outbox (aggregatetype, aggregateid, type) VALUES ('order', 'forged', 'T')"),
      "42501");
  EXPECT_EQ(sqlState(asRelay, "UPDATE public.outbox SET type = type"), "42501");
  EXPECT_EQ(sqlState(asRelay, "DELETE FROM public.outbox"), "42501");
  EXPECT_EQ(sqlState(asRelay, "SELECT pg_logical_emit_message(true, 'outbox', '{}')"), "42501");
  EXPECT_EQ(sqlState(asRelay, "CREATE PUBLICATION lp_forbidden FOR TABLE public.outbox"), "42501");
  // What the relay itself runs outside the replication protocol: readable by every role.
  EXPECT_EQ(sqlState(asRelay, "SELECT pg_catalog.pg_current_wal_lsn()"), "");
  EXPECT_EQ(sqlState(asRelay,
                     "SELECT slot_name, plugin, database, confirmed_flush_lsn FROM "
                     "pg_catalog.pg_replication_slots"),
            "");

  std::string writerRole = db.createLoginRole("lp_writer");
  admin.exec("GRANT outbox_writer TO " + writerRole);
  PgConnection writer(db.conninfo(writerRole));

  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config = relayConfig(db, topicPrefix);
  config.publication("outbox_relay");  // the one schema/outbox.sql created
  config.source("create_publication", "false");
  config.source("lag_poll_interval_ms", "500");
  config.metricsListen("127.0.0.1:0");
  auto relay = RelayProcess::start(config.render());
  ASSERT_TRUE(waitForSlotStreaming(admin, config.slot(), 120s)) << relay->logTail();
  EXPECT_EQ(admin.scalar("SELECT usename FROM pg_stat_activity WHERE pid = (SELECT active_pid FROM "
                         "pg_replication_slots WHERE slot_name = " +
                         sqlLiteral(config.slot()) + ")"),
            kRelayRole)
      << "the walsender runs as another role";
  std::string address = adminAddressOf(*relay);
  expectDelivered(writer, admin, topicPrefix, *relay);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(waitFor([&] { return scrapeValue(address, "outbox_relay_server_wal_lsn").value_or(0) > 0; }, 60s))
      << "the lag probe (pg_current_wal_lsn() as outbox_relay) never answered\n"
      << relay->logTail();
  EXPECT_EQ(relay->log().find("permission denied"), std::string::npos) << relay->logTail();

  relay->sigterm();
  auto stopped = relay->waitExit(60s);
  ASSERT_TRUE(stopped) << relay->logTail();
  EXPECT_TRUE(stopped->success()) << stopped->toString() << relay->logTail();
}

// outbox_relay does not own the outbox table, so it cannot create a publication for it (that takes ownership of the
// table and CREATE on the database). With create_publication = true the relay stops at setup (exit status 2) and
// says what a DBA runs, as whom, and which setting this role needs; with create_publication = false the same
// statement. Once the table's owner (not a superuser here) ran exactly that statement, the relay starts and
// delivers.
TEST(RelayLeastPrivilege, CreatingThePublicationAsTheSchemaRoleIsASetupErrorNamingTheStatementADbaRuns) {
  SchemaDatabase db;
  PgConnection admin(db.conninfo());
  std::string owner = db.createLoginRole("lp_owner");
  admin.exec("GRANT CREATE ON DATABASE " + db.name() + " TO " + owner);
  admin.exec("ALTER TABLE public.outbox OWNER TO " + owner);
  std::string writerRole = db.createLoginRole("lp_writer");
  admin.exec("GRANT outbox_writer TO " + writerRole);
  PgConnection writer(db.conninfo(writerRole));

  std::string topicPrefix = uniqueName("t");
  RelayConfigBuilder config = relayConfig(db, topicPrefix);  // a publication of its own, which does not exist
  std::string statement =
      "CREATE PUBLICATION \"" + config.publication() + "\" FOR TABLE \"public\".\"outbox\" WITH (publish = 'insert');";
  auto relay = RelayProcess::start(config.render());
  auto status = relay->waitExit(60s);
  ASSERT_TRUE(status) << "the relay runs on without a publication it cannot create" << relay->logTail();
  EXPECT_EQ(status->code, 2) << status->toString();
  std::string log = relay->log();
  EXPECT_NE(log.find("cannot create publication \"" + config.publication() + "\" as role \"outbox_relay\""),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("run `" + statement + "` in database \"" + db.name() + "\""), std::string::npos) << log;
  EXPECT_NE(log.find("as the owner of the outbox tables (role \"" + owner + "\")"), std::string::npos) << log;
  EXPECT_NE(log.find("set source.create_publication = false for this role"), std::string::npos) << log;
  EXPECT_FALSE(slotExists(admin, config.slot())) << "a failed setup left a slot holding WAL";
  EXPECT_FALSE(publicationExists(admin, config.publication()));

  // create_publication = false, as the message says: the same statement, before anything is created.
  config.source("create_publication", "false");
  auto asAdvised = RelayProcess::start(config.render(), "relay-create-publication-false");
  status = asAdvised->waitExit(60s);
  ASSERT_TRUE(status) << asAdvised->logTail();
  EXPECT_EQ(status->code, 2) << status->toString();
  std::string advisedLog = asAdvised->log();
  EXPECT_NE(advisedLog.find("does not exist and source.create_publication is false: run `" + statement + "`"),
            std::string::npos)
      << advisedLog;
  EXPECT_FALSE(slotExists(admin, config.slot()));

  // The DBA runs the statement from the message, as the table's owner.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m, std::regex("run `(CREATE PUBLICATION [^`]*)`"))) << log;
  PgConnection asOwner(db.conninfo(owner));
  asOwner.exec(m[1]);
  ASSERT_TRUE(publicationExists(admin, config.publication()));

  auto third = RelayProcess::start(config.render(), "relay-after-dba");
  ASSERT_TRUE(waitForSlotStreaming(admin, config.slot(), 120s)) << third->logTail();
  expectDelivered(writer, admin, topicPrefix, *third);
  EXPECT_TRUE(third->running()) << third->logTail();
}

// The sink's side (schema/sink.sql, "A least-privilege role for the sink"): a login with SELECT, INSERT, UPDATE and
// DELETE on the sink's two tables and the read model's, nothing else, with create_tables = false, applies events,
// stores its offsets and skips a duplicate (deduplication on, so both tables are used).
TEST(SinkLeastPrivilege, TheSinkRunsWithOnlyTheGrantsSchemaSinkSqlNames) {
  SchemaDatabase db("schema/sink.sql");
  PgConnection admin(db.conninfo());
  admin.exec("CREATE TABLE public.lp_orders (id text PRIMARY KEY, total numeric NOT NULL)");
  std::string role = db.createLoginRole("lp_sink");
  admin.exec(
      "GRANT SELECT, INSERT, UPDATE, DELETE ON public.outbox_sink_offsets, public.outbox_sink_processed_events "
      "TO " +
      role);
  admin.exec("GRANT SELECT, INSERT, UPDATE, DELETE ON public.lp_orders TO " + role);
  EXPECT_EQ(admin.scalar("SELECT has_database_privilege('" + role + "', current_database(), 'CREATE')"), "f");

  std::string topic = uniqueName("t") + ".order";
  for (int i = 1; i <= 10; ++i) {
    std::string id = "lp-order-" + std::to_string(i);
    produce(kafkaBootstrap(), topic, id, "{\"id\":\"" + id + "\",\"total\":" + std::to_string(i) + ".50}",
            {{"id", id}, {"eventType", "OrderCreated"}});
  }
  produce(kafkaBootstrap(), topic, "lp-order-1", "{\"id\":\"lp-order-1\",\"total\":999}",
          {{"id", "lp-order-1"}, {"eventType", "OrderCreated"}});  // published twice: skipped

  SinkConfigBuilder config;
  config.set("database", "conninfo", tomlString(db.conninfo(role)));
  config.set("database", "create_tables", "false");
  config.set("deduplication", "enabled", "true");
  config.set("kafka", "initial_offset", tomlString("earliest"));
  config.projection("orders", topic, "OrderCreated",
                    "INSERT INTO public.lp_orders (id, total) VALUES ($1, $2::numeric) ON CONFLICT (id) DO UPDATE SET "
                    "total = EXCLUDED.total",
                    {"/id", "/total"});
  auto sink = SinkProcess::start(config.render());
  ASSERT_TRUE(waitFor(
      [&] {
        return admin.scalar("SELECT sum(next_offset) FROM public.outbox_sink_offsets WHERE consumer_group = " +
                            sqlLiteral(config.group())) == "11";
      },
      120s))
      << sink->logTail();
  EXPECT_EQ(admin.scalar("SELECT count(*) FROM public.lp_orders"), "10");
  EXPECT_EQ(admin.scalar("SELECT total::text FROM public.lp_orders WHERE id = 'lp-order-1'"), "1.50")
      << "the duplicate was applied";
  EXPECT_EQ(admin.scalar("SELECT count(*) FROM public.outbox_sink_processed_events WHERE consumer_group = " +
                         sqlLiteral(config.group())),
            "10");
  EXPECT_EQ(sink->log().find("permission denied"), std::string::npos) << sink->logTail();
  EXPECT_TRUE(sink->running()) << sink->logTail();
  sink->sigterm();
  auto status = sink->waitExit(60s);
  ASSERT_TRUE(status) << sink->logTail();
  EXPECT_TRUE(status->success()) << status->toString() << sink->logTail();
}
