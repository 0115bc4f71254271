#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/ConfigSupport.h"

using namespace outbox;
using ::testing::HasSubstr;

namespace {

// A fixed environment, so these tests depend on nothing outside.
ConfigReader::Lookup fakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

// A file under the test's temp dir, removed at the end of the test.
class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    static int counter = 0;
    path_ = testing::TempDir() + "config_support_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
    std::ofstream(path_, std::ios::binary) << content;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string issuesText(const std::vector<ConfigIssue>& issues) { return formatIssues(issues); }

}  // namespace

// --- expandVariables -------------------------------------------------------------------------------------------

TEST(ConfigSupportExpand, ReplacesVariables) {
  std::string error;
  auto lookup = fakeEnv({{"HOST", "db"}, {"PORT", "5432"}, {"EMPTY", ""}});
  EXPECT_EQ(expandVariables("postgresql://${HOST}:${PORT}/x", error, lookup), "postgresql://db:5432/x");
  EXPECT_EQ(expandVariables("${HOST}${HOST}", error, lookup), "dbdb");
  EXPECT_EQ(expandVariables("a${EMPTY}b", error, lookup), "ab");
  EXPECT_EQ(expandVariables("no variables", error, lookup), "no variables");
  EXPECT_EQ(expandVariables("", error, lookup), "");
  EXPECT_EQ(expandVariables("$ and $$ and {HOST} and $HOST", error, lookup), "$ and $$ and {HOST} and $HOST");
}

TEST(ConfigSupportExpand, DoubleDollarBraceIsLiteral) {
  std::string error;
  auto lookup = fakeEnv({{"X", "1"}});
  EXPECT_EQ(expandVariables("$${X}", error, lookup), "${X}");
  EXPECT_EQ(expandVariables("a$${X}b${X}", error, lookup), "a${X}b1");
  // "$${UNSET}" is text, not a reference, so an unset name there is fine.
  EXPECT_EQ(expandVariables("$${UNSET}", error, lookup), "${UNSET}");
  EXPECT_EQ(expandVariables("$$${X}", error, lookup), "$${X}");
}

TEST(ConfigSupportExpand, UnsetVariableIsAnErrorNamingIt) {
  std::string error;
  auto lookup = fakeEnv({{"SET", "1"}});
  EXPECT_FALSE(expandVariables("x${SET}${MISSING_ONE}", error, lookup).has_value());
  EXPECT_THAT(error, HasSubstr("MISSING_ONE"));
  EXPECT_THAT(error, HasSubstr("not set"));

  error.clear();
  EXPECT_FALSE(expandVariables("${A_UNSET}/${B_UNSET}/${A_UNSET}", error, lookup).has_value());
  EXPECT_EQ(error, "environment variables A_UNSET, B_UNSET are not set");
}

TEST(ConfigSupportExpand, MalformedReferencesAreErrors) {
  std::string error;
  auto lookup = fakeEnv({});
  EXPECT_FALSE(expandVariables("${UNCLOSED", error, lookup).has_value());
  EXPECT_THAT(error, HasSubstr("no closing"));
  EXPECT_FALSE(expandVariables("${}", error, lookup).has_value());
  EXPECT_FALSE(expandVariables("${1ABC}", error, lookup).has_value());
  EXPECT_FALSE(expandVariables("${A-B}", error, lookup).has_value());
  EXPECT_THAT(error, HasSubstr("$${"));
}

TEST(ConfigSupportExpand, DefaultsToTheEnvironment) {
  ::setenv("OUTBOX_CONFIG_SUPPORT_TEST_VAR", "from-env", 1);
  std::string error;
  EXPECT_EQ(expandVariables("v=${OUTBOX_CONFIG_SUPPORT_TEST_VAR}", error), "v=from-env");
  ::unsetenv("OUTBOX_CONFIG_SUPPORT_TEST_VAR");
  EXPECT_FALSE(expandVariables("v=${OUTBOX_CONFIG_SUPPORT_TEST_VAR}", error).has_value());
}

// --- Files -----------------------------------------------------------------------------------------------------

TEST(ConfigSupportSecretFile, TrimsOneTrailingNewline) {
  std::string error;
  TempFile plain("s3cret");
  EXPECT_EQ(readSecretFile(plain.path(), error), "s3cret");
  TempFile newline("s3cret\n");
  EXPECT_EQ(readSecretFile(newline.path(), error), "s3cret");
  TempFile crlf("s3cret\r\n");
  EXPECT_EQ(readSecretFile(crlf.path(), error), "s3cret");
  TempFile two("s3cret\n\n");
  EXPECT_EQ(readSecretFile(two.path(), error), "s3cret\n");
  TempFile inner(" a b\nc ");
  EXPECT_EQ(readSecretFile(inner.path(), error), " a b\nc ");
}

TEST(ConfigSupportSecretFile, MissingFileNamesThePath) {
  std::string error;
  EXPECT_FALSE(readSecretFile("/nonexistent/outbox/secret", error).has_value());
  EXPECT_THAT(error, HasSubstr("\"/nonexistent/outbox/secret\""));
  EXPECT_THAT(error, HasSubstr("No such file"));
  EXPECT_FALSE(readSecretFile(testing::TempDir(), error).has_value());
  EXPECT_THAT(error, HasSubstr("directory"));
}

TEST(ConfigSupportFile, LoadConfigFileReportsAnUnreadableFile) {
  auto result = loadConfigFile<int>("/nonexistent/relay.toml", [](std::string_view, const std::string&) {
    return ConfigLoadResult<int>{1, {}};
  });
  EXPECT_FALSE(result.ok());
  ASSERT_EQ(result.issues.size(), 1u);
  EXPECT_EQ(result.issues[0].line, 0);
  EXPECT_THAT(result.issues[0].toString(),
              HasSubstr("/nonexistent/relay.toml: cannot open \"/nonexistent/relay.toml\""));
}

// --- ConfigIssue -----------------------------------------------------------------------------------------------

TEST(ConfigSupportIssue, FormatsWithAndWithoutPlace) {
  EXPECT_EQ((ConfigIssue{"relay.toml", 12, 3, "source.slot: must not be empty"}).toString(),
            "relay.toml:12:3: source.slot: must not be empty");
  EXPECT_EQ((ConfigIssue{"relay.toml", 0, 0, "source.conninfo: is required"}).toString(),
            "relay.toml: source.conninfo: is required");
  EXPECT_EQ(formatIssues({{"a", 1, 2, "x"}, {"a", 0, 0, "y"}}), "a:1:2: x\na: y\n");
}

// --- ConfigReader ----------------------------------------------------------------------------------------------

TEST(ConfigReader, ReadsTypedValuesAndKeepsDefaults) {
  ConfigReader reader("t.toml", fakeEnv({{"NAME", "expanded"}}));
  ASSERT_TRUE(reader.parse(R"(
top = 7
[a]
s = "x-${NAME}"
b = false
i = 42
big = 5000000000
u = 9
d = 1.5
di = 2
list = ["one", "${NAME}"]
opt = "given"
)"));
  ConfigTable root = reader.root();
  int top = 0;
  EXPECT_TRUE(root.get("top", top));
  EXPECT_EQ(top, 7);
  ConfigTable a = root.table("a");
  EXPECT_TRUE(a.present());
  EXPECT_EQ(a.path(), "a");
  std::string s = "default";
  bool b = true;
  int i = 0;
  int64_t big = 0;
  uint64_t u = 0;
  double d = 0, di = 0;
  std::vector<std::string> list;
  std::optional<std::string> opt, absentOpt;
  EXPECT_TRUE(a.get("s", s));
  EXPECT_TRUE(a.get("b", b));
  EXPECT_TRUE(a.get("i", i));
  EXPECT_TRUE(a.get("big", big));
  EXPECT_TRUE(a.get("u", u));
  EXPECT_TRUE(a.get("d", d));
  EXPECT_TRUE(a.get("di", di));
  EXPECT_TRUE(a.get("list", list));
  EXPECT_TRUE(a.get("opt", opt));
  EXPECT_FALSE(a.get("absent_opt", absentOpt));
  EXPECT_EQ(s, "x-expanded");
  EXPECT_FALSE(b);
  EXPECT_EQ(i, 42);
  EXPECT_EQ(big, 5000000000);
  EXPECT_EQ(u, 9u);
  EXPECT_EQ(d, 1.5);
  EXPECT_EQ(di, 2.0);
  EXPECT_EQ(list, (std::vector<std::string>{"one", "expanded"}));
  EXPECT_EQ(opt, "given");
  EXPECT_FALSE(absentOpt.has_value());

  std::string missing = "kept";
  int missingInt = 5;
  EXPECT_FALSE(a.get("nope", missing));
  EXPECT_FALSE(a.get("nope2", missingInt));
  EXPECT_EQ(missing, "kept");
  EXPECT_EQ(missingInt, 5);

  ConfigTable absent = root.table("absent");
  EXPECT_FALSE(absent.present());
  EXPECT_FALSE(absent.get("s", missing));
  EXPECT_EQ(missing, "kept");
  EXPECT_TRUE(reader.finish().empty()) << issuesText(reader.issues());
}

TEST(ConfigReader, WrongTypesAndRangesAreIssuesAtTheValue) {
  ConfigReader reader("t.toml", fakeEnv({}));
  ASSERT_TRUE(reader.parse(R"([a]
s = 1
b = "true"
i = "10"
small = 0
huge = 3000000000
neg = -1
list = ["a", 2]
sub = 3
)"));
  ConfigTable a = reader.root().table("a");
  std::string s = "d";
  bool b = true;
  int i = 1, small = 1, huge = 1;
  uint64_t neg = 1;
  std::vector<std::string> list;
  EXPECT_FALSE(a.get("s", s));
  EXPECT_FALSE(a.get("b", b));
  EXPECT_FALSE(a.get("i", i));
  EXPECT_FALSE(a.get("small", small, 1));
  EXPECT_FALSE(a.get("huge", huge));
  EXPECT_FALSE(a.get("neg", neg));
  EXPECT_FALSE(a.get("list", list));
  EXPECT_FALSE(a.table("sub").present());
  EXPECT_EQ(s, "d");
  EXPECT_TRUE(b);
  EXPECT_EQ(i, 1);

  auto issues = reader.finish();
  ASSERT_EQ(issues.size(), 8u) << issuesText(issues);
  EXPECT_EQ(issues[0].toString(), "t.toml:2:5: a.s: must be a string, got an integer (put it in double quotes)");
  EXPECT_EQ(issues[1].toString(), "t.toml:3:5: a.b: must be true or false, got a string (write it without quotes)");
  EXPECT_EQ(issues[2].toString(), "t.toml:4:5: a.i: must be an integer, got a string (write it without quotes)");
  EXPECT_EQ(issues[3].toString(), "t.toml:5:9: a.small: must be greater than 0, got 0");
  EXPECT_EQ(issues[4].toString(), "t.toml:6:8: a.huge: must be at most 2147483647, got 3000000000");
  EXPECT_EQ(issues[5].toString(), "t.toml:7:7: a.neg: must not be negative, got -1");
  EXPECT_EQ(issues[6].toString(), "t.toml:8:14: a.list[1]: must be a string, got an integer");
  EXPECT_EQ(issues[7].toString(), "t.toml:9:7: a.sub: must be a table, got an integer");
}

TEST(ConfigReader, RangeMessages) {
  ConfigReader reader("t.toml", fakeEnv({}));
  ASSERT_TRUE(reader.parse("a = 5\nb = 5\nc = 5\n"));
  ConfigTable root = reader.root();
  int a = 0, b = 0;
  int64_t c = 0;
  EXPECT_FALSE(root.get("a", a, 10));
  EXPECT_FALSE(root.get("b", b, 1, 4));
  EXPECT_FALSE(root.get("c", c, 6, 8));
  auto issues = reader.finish();
  ASSERT_EQ(issues.size(), 3u);
  EXPECT_EQ(issues[0].message, "a: must be at least 10, got 5");
  EXPECT_EQ(issues[1].message, "b: must be between 1 and 4, got 5");
  EXPECT_EQ(issues[2].message, "c: must be between 6 and 8, got 5");
}

TEST(ConfigReader, ValuesThatDoNotFitTheTypeAreOutOfRange) {
  ConfigReader reader("t.toml", fakeEnv({}));
  ASSERT_TRUE(reader.parse("big = 3000000000\nlow = -3000000000\nneg = -1\nmax = 9223372036854775807\n"));
  ConfigTable root = reader.root();
  int big = 7, low = 7;
  uint64_t neg = 7, max = 0;
  EXPECT_FALSE(root.get("big", big, 1));  // above: the type's limit is the bound that matters, not the minimum
  EXPECT_FALSE(root.get("low", low));
  EXPECT_FALSE(root.get("neg", neg, 1));
  EXPECT_TRUE(root.get("max", max));
  EXPECT_EQ(big, 7);
  EXPECT_EQ(low, 7);
  EXPECT_EQ(neg, 7u);
  EXPECT_EQ(max, 9223372036854775807u);
  auto issues = reader.finish();
  ASSERT_EQ(issues.size(), 3u) << issuesText(issues);
  EXPECT_EQ(issues[0].message, "big: must be at most 2147483647, got 3000000000");
  EXPECT_EQ(issues[1].message, "low: must be at least -2147483648, got -3000000000");
  EXPECT_EQ(issues[2].message, "neg: must be greater than 0, got -1");
}

TEST(ConfigReader, UnknownKeysEverywhereAreIssues) {
  ConfigReader reader("t.toml", fakeEnv({}));
  ASSERT_TRUE(reader.parse(R"(name = "x"
nmae = "typo"
[section]
level = 1
[section.inner]
known = 1
unknown_inner = 2
[[items]]
id = 1
[[items]]
id = 2
idd = 3
[free]
anything = "goes"
[unread]
x = 1
)"));
  ConfigTable root = reader.root();
  std::string name;
  int level = 0, known = 0;
  root.get("name", name);
  ConfigTable section = root.table("section");
  section.get("level", level);
  section.table("inner").get("known", known);
  for (ConfigTable item : root.tables("items")) {
    int id = 0;
    item.get("id", id);
  }
  auto free = root.table("free").entries();
  ASSERT_EQ(free.size(), 1u);

  auto issues = reader.finish();
  ASSERT_EQ(issues.size(), 4u) << issuesText(issues);
  EXPECT_EQ(issues[0].toString(), "t.toml:2:1: nmae: unknown key; did you mean name?");
  EXPECT_EQ(issues[1].toString(),
            "t.toml:7:1: section.inner.unknown_inner: unknown key; remove it, or use one of: known");
  EXPECT_EQ(issues[2].toString(), "t.toml:12:1: items[1].idd: unknown key; did you mean id?");
  EXPECT_EQ(issues[3].line, 15);
  EXPECT_THAT(issues[3].message, HasSubstr("unread: unknown key"));
}

TEST(ConfigReader, ArrayOfTablesWrittenAsATableIsAnIssue) {
  ConfigReader reader("t.toml", fakeEnv({}));
  ASSERT_TRUE(reader.parse("[items]\nid = 1\n"));
  EXPECT_TRUE(reader.root().tables("items").empty());
  auto issues = reader.finish();
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_THAT(issues[0].message, HasSubstr("items: must be an array of tables, got a table; write [[items]]"));
}

TEST(ConfigReader, EntriesExpandAndConvertScalarsInFileOrder) {
  ConfigReader reader("t.toml", fakeEnv({{"V", "val"}}));
  ASSERT_TRUE(reader.parse(R"([props]
"z.last" = "${V}"
"a.int" = 5
"m.bool" = true
"f.float" = 0.5
"bad" = [1]
[strict]
ok = "x"
num = 1
)"));
  ConfigTable root = reader.root();
  auto props = root.table("props").entries(EntryValues::Scalars);
  auto strict = root.table("strict").entries(EntryValues::Strings);
  EXPECT_EQ(props, (std::vector<std::pair<std::string, std::string>>{
                       {"z.last", "val"}, {"a.int", "5"}, {"m.bool", "true"}, {"f.float", "0.5"}}));
  EXPECT_EQ(strict, (std::vector<std::pair<std::string, std::string>>{{"ok", "x"}}));
  auto issues = reader.finish();
  ASSERT_EQ(issues.size(), 2u) << issuesText(issues);
  EXPECT_EQ(issues[0].toString(), "t.toml:6:9: props.bad: must be a string, number or boolean, got an array");
  EXPECT_EQ(issues[1].toString(), "t.toml:9:7: strict.num: must be a string, got an integer (put it in double quotes)");
}

TEST(ConfigReader, UnsetVariableIsAnIssueAtTheString) {
  ConfigReader reader("t.toml", fakeEnv({}));
  ASSERT_TRUE(reader.parse("[a]\nurl = \"x${NOT_THERE}\"\nlit = \"$${NOT_THERE}\"\n"));
  ConfigTable a = reader.root().table("a");
  std::string url = "default", lit;
  EXPECT_FALSE(a.get("url", url));
  EXPECT_TRUE(a.get("lit", lit));
  EXPECT_EQ(url, "default");
  EXPECT_EQ(lit, "${NOT_THERE}");
  auto issues = reader.finish();
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].toString(),
            "t.toml:2:7: a.url: environment variable NOT_THERE is not set; export it before starting, or write $${ "
            "for a literal \"${\"");
}

TEST(ConfigReader, RequireReportsMissingAndEmpty) {
  ConfigReader reader("t.toml", fakeEnv({}));
  ASSERT_TRUE(reader.parse("top = \"\"\n[a]\nx = 1\n"));
  ConfigTable root = reader.root();
  std::string out;
  EXPECT_FALSE(root.require("top", out));
  EXPECT_FALSE(root.require("missing_top", out));
  ConfigTable a = root.table("a");
  a.get("x", *std::make_unique<int>());
  EXPECT_FALSE(a.require("needed", out));
  EXPECT_FALSE(root.table("b").require("needed", out));
  auto issues = reader.finish();
  ASSERT_EQ(issues.size(), 4u) << issuesText(issues);
  EXPECT_EQ(issues[0].toString(), "t.toml:1:7: top: must not be empty");
  EXPECT_EQ(issues[1].toString(), "t.toml:2:1: a.needed: is required; set it in [a]");
  EXPECT_EQ(issues[2].toString(), "t.toml: missing_top: is required; set it at the top level");
  EXPECT_EQ(issues[3].toString(), "t.toml: b.needed: is required; set it in [b]");
}

TEST(ConfigReader, SecretFile) {
  TempFile secret("hunter2\n");
  TempFile empty("");
  ConfigReader reader("t.toml", fakeEnv({{"SECRET_PATH", secret.path()}}));
  ASSERT_TRUE(
      reader.parse("good = \"${SECRET_PATH}\"\nmissing = \"/nonexistent/pw\"\nempty = \"" + empty.path() + "\"\n"));
  ConfigTable root = reader.root();
  std::optional<std::string> path;
  std::string value;
  EXPECT_TRUE(root.getSecretFile("good", path, value));
  EXPECT_EQ(path, secret.path());
  EXPECT_EQ(value, "hunter2");
  std::optional<std::string> path2;
  std::string value2;
  EXPECT_FALSE(root.getSecretFile("missing", path2, value2));
  EXPECT_FALSE(root.getSecretFile("empty", path2, value2));
  EXPECT_FALSE(path2.has_value());
  auto issues = reader.finish();
  ASSERT_EQ(issues.size(), 2u) << issuesText(issues);
  EXPECT_EQ(issues[0].toString(),
            "t.toml:2:11: missing: cannot open \"/nonexistent/pw\": No such file or directory; create the file "
            "(readable by this process) or remove missing");
  EXPECT_THAT(issues[1].message, HasSubstr("is empty"));
}

TEST(ConfigReader, SyntaxErrorHasLineAndColumn) {
  ConfigReader reader("t.toml", fakeEnv({}));
  EXPECT_FALSE(reader.parse("[a]\nx = 1\ny = = 2\n"));
  auto issues = reader.finish();
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].line, 3);
  EXPECT_GT(issues[0].column, 0);
  EXPECT_THAT(issues[0].toString(), HasSubstr("t.toml:3:"));
  EXPECT_THAT(issues[0].message, HasSubstr("TOML syntax error"));

  ConfigReader duplicate("d.toml", fakeEnv({}));
  EXPECT_FALSE(duplicate.parse("[a]\nx = 1\nx = 2\n"));
  EXPECT_EQ(duplicate.issues().at(0).line, 3);
}

TEST(ConfigReader, InvalidFallsBackToTheTableHeader) {
  ConfigReader reader("t.toml", fakeEnv({}));
  ASSERT_TRUE(reader.parse("\n[a]\nx = 1\n"));
  ConfigTable a = reader.root().table("a");
  a.get("x", *std::make_unique<int>());
  a.invalid("x", "bad x");
  a.invalid("unset", "bad default");
  a.invalidTable("bad table");
  auto issues = reader.finish();
  ASSERT_EQ(issues.size(), 3u);
  EXPECT_EQ(issues[0].toString(), "t.toml:2:1: a.unset: bad default");
  EXPECT_EQ(issues[1].toString(), "t.toml:2:1: a: bad table");
  EXPECT_EQ(issues[2].toString(), "t.toml:3:5: a.x: bad x");
}

// --- Redaction helpers -----------------------------------------------------------------------------------------

// libpq parses the conninfo; it comes back as key=value pairs in libpq's order of options.
TEST(ConfigSupportRedact, ConninfoUri) {
  EXPECT_EQ(redactConninfo("postgresql://user:pa55@host:5432/db"),
            "user=user password=<redacted> dbname=db host=host port=5432");
  EXPECT_EQ(redactConninfo("postgres://user:pa55@host/db?sslmode=require"),
            "user=user password=<redacted> dbname=db host=host sslmode=require");
  EXPECT_EQ(redactConninfo("postgresql://user@host/db"), "user=user dbname=db host=host");
  EXPECT_EQ(redactConninfo("postgresql://host:5432/db"), "dbname=db host=host port=5432");
  EXPECT_EQ(redactConninfo("postgresql://host/db?user=u&password=pa55&sslmode=disable"),
            "user=u password=<redacted> dbname=db host=host sslmode=disable");
  EXPECT_EQ(redactConninfo("postgresql://u:p%40ss@host/db"), "user=u password=<redacted> dbname=db host=host");
  EXPECT_EQ(redactConninfo("postgresql://host/db?user=me@corp"), "user=me@corp dbname=db host=host");
}

TEST(ConfigSupportRedact, ConninfoKeyValue) {
  EXPECT_EQ(redactConninfo("host=db user=u password=pa55 dbname=x"), "user=u password=<redacted> dbname=x host=db");
  EXPECT_EQ(redactConninfo("host=db password = 'p a\\'ss' dbname=x"), "password=<redacted> dbname=x host=db");
  EXPECT_EQ(redactConninfo("password=pa55"), "password=<redacted>");
  EXPECT_EQ(redactConninfo("host=db"), "host=db");
  EXPECT_EQ(redactConninfo(""), "");
  EXPECT_EQ(redactConninfo("host=db application_name='my app' options='-c search_path=\\'s\\''"),
            "host=db options='-c search_path=\\'s\\'' application_name='my app'");
}

TEST(ConfigSupportRedact, ConninfoSslPasswordIsASecretInBothForms) {
  for (const char* conninfo :
       {"host=db sslpassword=key-pw-1 sslmode=require", "postgresql://db/app?sslpassword=key-pw-1&sslmode=require",
        "postgresql://u:key-pw-1@db/app?sslpassword=key-pw-1"}) {
    std::string redacted = redactConninfo(conninfo);
    EXPECT_THAT(redacted, ::testing::Not(HasSubstr("key-pw-1"))) << conninfo;
    EXPECT_THAT(redacted, HasSubstr("sslpassword=<redacted>")) << conninfo;
  }
}

TEST(ConfigSupportRedact, ConninfoOutputIsAConninfoAgain) {
  for (const char* conninfo : {"postgresql://u:pw@h1:5432,h2:5433/db?connect_timeout=5",
                               "host=db application_name='it\\'s a \\\\ test' dbname=x"}) {
    std::string redacted = redactConninfo(conninfo);
    EXPECT_EQ(redactConninfo(redacted), redacted);
  }
}

TEST(ConfigSupportRedact, ConninfoLibpqCannotParseIsNotEchoed) {
  EXPECT_EQ(redactConninfo("host=db password='unterminated pa55"),
            "<could not be parsed: unterminated quoted string in connection info string>");
  // libpq's messages quote the part they reject, which can be the password: it is left out.
  EXPECT_EQ(redactConninfo("host=db password pa55"),
            "<could not be parsed: missing \"...\" in connection info string>");
  EXPECT_EQ(redactConninfo("host=db hunter2"), "<could not be parsed: missing \"...\" in connection info string>");
  EXPECT_EQ(redactConninfo("postgresql://u:pa%zz55@host/db"),
            "<could not be parsed: invalid percent-encoded token: \"...\">");
  EXPECT_THAT(redactConninfo("postgresql://u:pa55@[::1/db"), ::testing::Not(HasSubstr("pa55")));
}

TEST(ConfigSupportRedact, ConninfoUriWithARawAtOrSlashInThePasswordIsNotShown) {
  // libpq would read "p" as the password and show the rest of it as host, port and dbname.
  for (const char* conninfo : {"postgresql://u:p@ss:w/rd@host/db", "postgresql://u:p/ss@host/db"}) {
    std::string redacted = redactConninfo(conninfo);
    EXPECT_THAT(redacted, HasSubstr("not shown")) << conninfo;
    EXPECT_THAT(redacted, ::testing::Not(HasSubstr("p@ss"))) << conninfo;
    EXPECT_THAT(redacted, ::testing::Not(HasSubstr("w/rd"))) << conninfo;
    EXPECT_THAT(redacted, ::testing::Not(HasSubstr("p/ss"))) << conninfo;
  }
}

TEST(ConfigSupportRedact, SecretKafkaProperties) {
  EXPECT_TRUE(isSecretKafkaProperty("sasl.password"));
  EXPECT_TRUE(isSecretKafkaProperty("ssl.key.password"));
  EXPECT_TRUE(isSecretKafkaProperty("sasl.oauthbearer.client.secret"));
  EXPECT_TRUE(isSecretKafkaProperty("sasl.oauthbearer.config"));
  EXPECT_TRUE(isSecretKafkaProperty("ssl.key.pem"));
  EXPECT_TRUE(isSecretKafkaProperty("SSL.KEYSTORE.PASSWORD"));
  EXPECT_FALSE(isSecretKafkaProperty("sasl.username"));
  EXPECT_FALSE(isSecretKafkaProperty("compression.type"));
  EXPECT_FALSE(isSecretKafkaProperty("ssl.certificate.pem"));
}

TEST(ConfigSupportToml, QuotesAndKeys) {
  EXPECT_EQ(tomlQuote("plain"), "\"plain\"");
  EXPECT_EQ(tomlQuote("a\"b\\c\nd\x01"), "\"a\\\"b\\\\c\\nd\\u0001\"");
  EXPECT_EQ(tomlKey("slot_name-1"), "slot_name-1");
  EXPECT_EQ(tomlKey("compression.type"), "\"compression.type\"");
  EXPECT_EQ(tomlKey(""), "\"\"");
  // toml++ would write 'C:\dir' and '''two\nlines''' by default; messages and summaries keep double quotes.
  EXPECT_EQ(tomlQuote("C:\\dir"), "\"C:\\\\dir\"");
  EXPECT_EQ(tomlQuote("two\nlines"), "\"two\\nlines\"");
}

TEST(ConfigSupportToml, KafkaSummaryRedactsSecretPropertiesAndShowsSecretFilePaths) {
  toml::table kafka{{"bootstrap_servers", "k:1"}};
  addKafkaSummary(kafka, {{"compression.type", "lz4"}, {"SASL.PASSWORD", "hunter2"}, {"ssl.key.pem", "PEM"}},
                  {{"sasl.password", "/run/secrets/sasl"}});
  std::string text = formatToml(kafka);
  EXPECT_THAT(text, ::testing::Not(HasSubstr("hunter2")));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("PEM")));
  EXPECT_EQ(text,
            "bootstrap_servers = \"k:1\"\n\n"
            "[properties]\n\"SASL.PASSWORD\" = \"<redacted>\"\n\"compression.type\" = \"lz4\"\n"
            "\"ssl.key.pem\" = \"<redacted>\"\n\n"
            "[secret_files]\n\"sasl.password\" = \"/run/secrets/sasl\"");

  toml::table none;
  addKafkaSummary(none, {}, {});
  EXPECT_TRUE(none.empty());
}
