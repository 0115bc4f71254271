// Which failed statements make an event poison: only SQLSTATE classes 22 (data exception) and 23 (integrity
// constraint violation); everything else is the environment's and is retried.
// https://www.postgresql.org/docs/current/errcodes-appendix.html
#include <gtest/gtest.h>

#include "src/BatchApplier.h"

using namespace outbox::sink;

TEST(SinkSqlStateTest, OnlyDataExceptionsAndConstraintViolationsArePoison) {
  struct Case {
    const char* sqlState;
    SqlFault expected;
    const char* what;
  };
  const Case cases[] = {
      {"22P02", SqlFault::Data, "invalid text representation (a cast that fails)"},
      {"22003", SqlFault::Data, "numeric value out of range"},
      {"22001", SqlFault::Data, "string data right truncation"},
      {"22021", SqlFault::Data, "character not in repertoire"},
      {"22012", SqlFault::Data, "division by zero"},
      {"23502", SqlFault::Data, "not null violation"},
      {"23505", SqlFault::Data, "unique violation"},
      {"23503", SqlFault::Data, "foreign key violation"},
      {"23514", SqlFault::Data, "check violation"},
      {"25006", SqlFault::Environment, "read only sql transaction (a failover onto a standby)"},
      {"42P01", SqlFault::Environment, "undefined table (a migration renamed it)"},
      {"42703", SqlFault::Environment, "undefined column"},
      {"42501", SqlFault::Environment, "insufficient privilege"},
      {"42601", SqlFault::Environment, "syntax error"},
      {"57014", SqlFault::Environment, "query canceled (statement timeout)"},
      {"57P01", SqlFault::Environment, "admin shutdown"},
      {"0A000", SqlFault::Environment, "feature not supported (cached plan invalidated by DDL)"},
      {"08006", SqlFault::Environment, "connection failure"},
      {"40001", SqlFault::Environment, "serialization failure"},
      {"40P01", SqlFault::Environment, "deadlock detected"},
      {"53100", SqlFault::Environment, "disk full"},
      {"55P03", SqlFault::Environment, "lock not available"},
      {"58030", SqlFault::Environment, "io error"},
      {"XX000", SqlFault::Environment, "internal error"},
      {"P0001", SqlFault::Environment, "raise exception (a trigger's own error)"},
      {"2200", SqlFault::Environment, "malformed"},
      {"", SqlFault::Environment, "empty"},
      {nullptr, SqlFault::Environment, "no SQLSTATE: the connection failed"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(classifySqlState(c.sqlState), c.expected) << (c.sqlState ? c.sqlState : "(null)") << ": " << c.what;
  }
}

TEST(SinkSqlStateTest, ClassLabel) {
  EXPECT_EQ(sqlStateClass("25006"), "25");
  EXPECT_EQ(sqlStateClass("57014"), "57");
  EXPECT_EQ(sqlStateClass(""), "none");
}
