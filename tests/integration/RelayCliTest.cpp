// The relay's command line as a user meets it: --version, --help, --check-config (exit 2 and FILE:LINE:COL for every
// problem) and --config with a broken file.
#include <gtest/gtest.h>

#include <regex>

#include "support/RelayProcess.h"
#include "support/TestEnv.h"

using namespace outbox::test;
using namespace std::chrono_literals;

namespace {

CommandResult relay(const std::vector<std::string>& args) {
  std::vector<std::string> argv{binPath("outbox-relay")};
  argv.insert(argv.end(), args.begin(), args.end());
  return runCommand(argv, 60s);
}

// "FILE:LINE:COL: " somewhere in `output`.
bool namesLine(const std::string& output, const std::string& file, int line) {
  std::string escaped = std::regex_replace(file, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)");
  return std::regex_search(output, std::regex(escaped + ":" + std::to_string(line) + ":[0-9]+: "));
}

// A config that is valid but for the problems a test puts at known lines.
const char* kBrokenConfig =
    "[source]\n"                                      // 1
    "conninfo = \"postgresql://x@127.0.0.1:1/db\"\n"  // 2
    "slot = \"cli_slot\"\n"                           // 3
    "status_interval_ms = \"often\"\n"                // 4: not an integer
    "\n"                                              // 5
    "[kafka]\n"                                       // 6
    "bootstrap_servers = \"127.0.0.1:1\"\n"           // 7
    "no_such_key = 1\n"                               // 8: unknown key
    "\n"                                              // 9
    "[[outbox]]\n"                                    // 10
    "table = \"public.outbox\"\n"                     // 11
    "topic = \"outbox.event.{aggregatetype}\"\n";     // 12

}  // namespace

TEST(RelayCli, VersionPrintsTheProjectVersion) {
  auto r = relay({"--version"});
  EXPECT_TRUE(r.status.success()) << r.status.toString() << "\n" << r.output;
  EXPECT_NE(r.output.find(OUTBOX_RELAY_VERSION), std::string::npos) << r.output;
}

TEST(RelayCli, HelpNamesTheOptions) {
  auto r = relay({"--help"});
  EXPECT_TRUE(r.status.success()) << r.status.toString() << "\n" << r.output;
  for (const char* option : {"--config", "--check-config", "--version"}) {
    EXPECT_NE(r.output.find(option), std::string::npos) << "--help does not mention " << option << ":\n" << r.output;
  }
  // Each exit status of Relay::run, distinct: an undecodable stream (4) is not an internal error (5).
  for (const char* status : {"0 stopped cleanly", "1 stopped with events", "2 configuration", "3 an event failed",
                             "4 the replication stream", "5 internal error"}) {
    EXPECT_NE(r.output.find(status), std::string::npos) << "--help does not list \"" << status << "\":\n" << r.output;
  }
}

TEST(RelayCli, UnknownOptionFails) {
  auto r = relay({"--no-such-option"});
  EXPECT_TRUE(r.status.exited) << r.status.toString();
  EXPECT_NE(r.status.code, 0) << r.output;
}

TEST(RelayCli, CheckConfigAcceptsTheShippedExample) {
  // examples/relay.toml reads ${PGURL} and ${KAFKA_BOOTSTRAP}, which the dev stack's environment sets.
  pgUrl();
  kafkaBootstrap();
  auto r = relay({"--check-config", sourcePath("examples/relay.toml")});
  EXPECT_TRUE(r.status.success()) << r.status.toString() << "\n" << r.output;
}

TEST(RelayCli, CheckConfigAcceptsARenderedTestConfig) {
  RelayConfigBuilder config;
  config.addOutbox({"public.some_outbox", "cli.{aggregatetype}", {}, {{"eventType", "type"}}})
      .addOutbox({"other.events",
                  "cli2.{kind}",
                  {{"id_column", "event_id"},
                   {"aggregatetype_column", "kind"},
                   {"aggregateid_column", "entity"},
                   {"type_column", "name"},
                   {"payload_column", "body"}},
                  {}})
      .messages("cli.msg.{aggregatetype}", {{"eventType", "type"}})
      .limits(5000, 8 << 20)
      .kafkaProperty("compression.type", "lz4");
  std::string path = writeTempFile("good.toml", config.render());
  auto r = relay({"--check-config", path});
  EXPECT_TRUE(r.status.success()) << r.status.toString() << "\n" << r.output << "\nconfig:\n" << config.render();
}

TEST(RelayCli, CheckConfigNamesTheLineOfEveryProblem) {
  std::string path = writeTempFile("broken.toml", kBrokenConfig);
  auto r = relay({"--check-config", path});
  EXPECT_TRUE(r.status.exited && r.status.code == 2) << r.status.toString() << "\n" << r.output;
  EXPECT_TRUE(namesLine(r.output, path, 4)) << "the wrong type on line 4 is not reported as " << path << ":4:COL:\n"
                                            << r.output;
  EXPECT_TRUE(namesLine(r.output, path, 8)) << "the unknown key on line 8 is not reported as " << path << ":8:COL:\n"
                                            << r.output;
  EXPECT_NE(r.output.find("no_such_key"), std::string::npos) << r.output;
}

TEST(RelayCli, CheckConfigNamesTheLineOfATomlSyntaxError) {
  std::string path = writeTempFile("syntax.toml",
                                   "[source]\n"
                                   "slot = \"s\"\n"
                                   "conninfo = \"postgresql://x@127.0.0.1:1/db\n"  // line 3: unterminated string
                                   "[kafka]\n"
                                   "bootstrap_servers = \"127.0.0.1:1\"\n");
  auto r = relay({"--check-config", path});
  EXPECT_TRUE(r.status.exited && r.status.code == 2) << r.status.toString() << "\n" << r.output;
  EXPECT_TRUE(namesLine(r.output, path, 3)) << r.output;
}

TEST(RelayCli, CheckConfigOfAMissingFileFails) {
  std::string path = "/nonexistent/outbox-relay-" + uniqueName("cli") + ".toml";
  auto r = relay({"--check-config", path});
  EXPECT_TRUE(r.status.exited && r.status.code == 2) << r.status.toString() << "\n" << r.output;
  EXPECT_NE(r.output.find(path), std::string::npos) << r.output;
}

TEST(RelayCli, RunWithABrokenConfigFailsAtOnceNamingTheLine) {
  std::string path = writeTempFile("broken.toml", kBrokenConfig);
  auto r = relay({"--config", path});
  EXPECT_TRUE(r.status.exited) << r.status.toString();
  EXPECT_NE(r.status.code, 0) << r.output;
  EXPECT_TRUE(namesLine(r.output, path, 8)) << r.output;
}
