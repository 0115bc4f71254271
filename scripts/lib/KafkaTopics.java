// Resets a demo's Kafka topics with the Admin API of the dev stack's own Kafka jars (the stack has no Kafka
// command-line tools, and kcat cannot delete or create topics). Run as a single source file:
//   java -cp "<kafka libs>/*" scripts/lib/KafkaTopics.java BOOTSTRAP PREFIX GROUPS TOPICS
//     deletes every topic whose name starts with PREFIX and waits until the broker no longer lists them, deletes
//     the consumer groups GROUPS (comma-separated; one that is unknown or still has members is left), then
//     creates TOPICS (comma-separated, 3 partitions) and waits until each has a leader for every partition.
// Exit status 0 when all of that held within the bounds, 1 otherwise (the message says what was not reached).
import java.util.*;
import java.util.concurrent.*;
import java.util.stream.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;

public class KafkaTopics {
  static final long BOUND_MS = 60_000;

  public static void main(String[] args) throws Exception {
    if (args.length != 4) {
      System.err.println("usage: KafkaTopics BOOTSTRAP PREFIX GROUPS TOPICS");
      System.exit(2);
    }
    String prefix = args[1];
    List<String> groups = split(args[2]);
    List<String> topics = split(args[3]);
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
    try (Admin admin = Admin.create(props)) {
      long deadline = System.currentTimeMillis() + BOUND_MS;
      Set<String> old = withPrefix(admin, prefix);
      if (!old.isEmpty()) {
        try {
          admin.deleteTopics(old).all().get(30, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
          if (!(e.getCause() instanceof UnknownTopicOrPartitionException)) throw e;
        }
        // Deletion is asynchronous: a topic re-created while it is still being deleted fails (or keeps old data).
        while (!withPrefix(admin, prefix).isEmpty()) {
          if (System.currentTimeMillis() > deadline) fail("topics " + withPrefix(admin, prefix) + " still exist");
          Thread.sleep(200);
        }
      }
      System.out.println("deleted topics: " + (old.isEmpty() ? "(none)" : String.join(", ", new TreeSet<>(old))));

      if (!groups.isEmpty()) {
        for (Map.Entry<String, KafkaFuture<Void>> e : admin.deleteConsumerGroups(groups).deletedGroups().entrySet()) {
          try {
            e.getValue().get(30, TimeUnit.SECONDS);
            System.out.println("deleted consumer group " + e.getKey());
          } catch (ExecutionException ex) {
            // Only cosmetic (the sinks keep their offsets in their databases, and the broker drops a deleted
            // topic's committed offsets): a group that still has a member until its session times out stays.
            if (!(ex.getCause() instanceof GroupIdNotFoundException)) {
              System.err.println("KafkaTopics: consumer group " + e.getKey() + " not deleted: " + ex.getCause().getMessage());
            }
          }
        }
      }

      while (true) {
        try {
          admin.createTopics(topics.stream().map(t -> new NewTopic(t, 3, (short) 1)).collect(Collectors.toList()))
              .all().get(30, TimeUnit.SECONDS);
          break;
        } catch (ExecutionException e) {
          // The broker may still be finishing the deletion of a topic of that name: try again within the bound.
          if (e.getCause() instanceof TopicExistsException && System.currentTimeMillis() < deadline) {
            Set<String> existing = admin.listTopics().names().get(30, TimeUnit.SECONDS);
            topics = topics.stream().filter(t -> !existing.contains(t)).collect(Collectors.toList());
            if (topics.isEmpty()) break;
            Thread.sleep(200);
            continue;
          }
          throw e;
        }
      }
      for (String t : split(args[3])) {
        while (!ready(admin, t)) {
          if (System.currentTimeMillis() > deadline) fail("topic " + t + " has no leader for every partition");
          Thread.sleep(200);
        }
      }
      System.out.println("created topics: " + String.join(", ", split(args[3])));
    }
  }

  static List<String> split(String s) {
    return Arrays.stream(s.split(",")).map(String::trim).filter(x -> !x.isEmpty()).collect(Collectors.toList());
  }

  static Set<String> withPrefix(Admin admin, String prefix) throws Exception {
    return admin.listTopics().names().get(30, TimeUnit.SECONDS).stream()
        .filter(n -> n.startsWith(prefix)).collect(Collectors.toSet());
  }

  static boolean ready(Admin admin, String topic) throws Exception {
    try {
      TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
      return d.partitions().stream().allMatch(p -> p.leader() != null && !p.leader().isEmpty());
    } catch (ExecutionException e) {
      if (e.getCause() instanceof UnknownTopicOrPartitionException) return false;
      throw e;
    }
  }

  static void fail(String message) {
    System.err.println("KafkaTopics: " + message + " within " + BOUND_MS / 1000 + " s");
    System.exit(1);
  }
}
