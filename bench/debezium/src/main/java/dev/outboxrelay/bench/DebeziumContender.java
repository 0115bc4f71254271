package dev.outboxrelay.bench;

import io.debezium.embedded.Connect;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.engine.format.ChangeEventFormat;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.source.SourceRecord;

/**
 * The Debezium contender of bench/run, and a small Kafka admin helper.
 *
 * <pre>
 *   debezium key=value...   Debezium's embedded engine (PostgreSQL connector, pgoutput, outbox EventRouter SMT with
 *                           its defaults) feeding a KafkaProducer (acks=all, enable.idempotence=true). Each batch
 *                           the engine hands over is sent, waited for, and only then marked processed, so the
 *                           offsets (and the slot's confirmed LSN) never run ahead of Kafka - the relay's
 *                           guarantee. Prints "ACKED n" every 200 ms and "DONE n" the moment the expect-th record is acknowledged.
 *   topics bootstrap name... creates topics (3 partitions, message.timestamp.type=LogAppendTime).
 * </pre>
 */
public final class DebeziumContender {
  public static void main(String[] args) throws Exception {
    if (args.length >= 2 && args[0].equals("topics")) {
      createTopics(args);
      return;
    }
    if (args.length < 1 || !args[0].equals("debezium")) {
      System.err.println("usage: debezium key=value... | topics BOOTSTRAP TOPIC...");
      System.exit(2);
    }
    Map<String, String> a = new HashMap<>();
    for (int i = 1; i < args.length; i++) {
      int eq = args[i].indexOf('=');
      a.put(args[i].substring(0, eq), args[i].substring(eq + 1));
    }
    runDebezium(a);
  }

  private static void createTopics(String[] args) throws Exception {
    Properties p = new Properties();
    p.put("bootstrap.servers", args[1]);
    try (Admin admin = Admin.create(p)) {
      List<NewTopic> topics = new ArrayList<>();
      for (int i = 2; i < args.length; i++) {
        topics.add(new NewTopic(args[i], 3, (short) 1)
            .configs(Map.of("message.timestamp.type", "LogAppendTime")));
      }
      admin.createTopics(topics).all().get(60, TimeUnit.SECONDS);
    }
  }

  private static byte[] bytes(Object o) {
    if (o == null) return null;
    if (o instanceof byte[] b) return b;
    if (o instanceof java.nio.ByteBuffer bb) {
      byte[] b = new byte[bb.remaining()];
      bb.duplicate().get(b);
      return b;
    }
    return o.toString().getBytes(StandardCharsets.UTF_8);
  }

  private static void runDebezium(Map<String, String> a) throws Exception {
    long expect = Long.parseLong(a.getOrDefault("expect", "0"));
    String topicPrefix = a.getOrDefault("topic_prefix", "");

    Properties pp = new Properties();
    pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("bootstrap"));
    pp.put(ProducerConfig.ACKS_CONFIG, "all");
    pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp);

    // The connector as Debezium's PostgreSQL and outbox documentation configure it: capture the outbox table only,
    // pgoutput, no snapshot (the slot was created before the events were written), no tombstones, EventRouter
    // with its defaults (route.by.field=aggregatetype, topic outbox.event.${routedByValue}, key aggregateid,
    // value payload, header id).
    Properties p = new Properties();
    p.put("name", "bench-debezium");
    p.put("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
    p.put("offset.storage", "org.apache.kafka.connect.storage.FileOffsetBackingStore");
    p.put("offset.storage.file.filename", a.get("offsets_file"));
    p.put("database.hostname", a.getOrDefault("pg_host", "127.0.0.1"));
    p.put("database.port", a.get("pg_port"));
    p.put("database.user", a.getOrDefault("pg_user", "postgres"));
    p.put("database.password", a.getOrDefault("pg_password", ""));
    p.put("database.dbname", a.getOrDefault("pg_db", "postgres"));
    p.put("topic.prefix", "bench");
    p.put("plugin.name", "pgoutput");
    p.put("slot.name", a.get("slot"));
    p.put("publication.name", a.get("publication"));
    p.put("publication.autocreate.mode", "filtered");
    p.put("table.include.list", "public.outbox");
    p.put("snapshot.mode", "no_data");
    p.put("tombstones.on.delete", "false");
    p.put("transforms", "outbox");
    p.put("transforms.outbox.type", "io.debezium.transforms.outbox.EventRouter");
    for (Map.Entry<String, String> e : a.entrySet()) {  // extra connector/engine properties: dbz.<key>=<value>
      if (e.getKey().startsWith("dbz.")) p.put(e.getKey().substring(4), e.getValue());
    }

    AtomicLong acked = new AtomicLong();
    AtomicReference<Exception> sendError = new AtomicReference<>();
    DebeziumEngine<RecordChangeEvent<SourceRecord>> engine = DebeziumEngine.create(ChangeEventFormat.of(Connect.class))
        .using(p)
        .notifying((List<RecordChangeEvent<SourceRecord>> batch,
                    DebeziumEngine.RecordCommitter<RecordChangeEvent<SourceRecord>> committer) -> {
          List<Future<RecordMetadata>> sent = new ArrayList<>(batch.size());
          for (RecordChangeEvent<SourceRecord> ev : batch) {
            SourceRecord r = ev.record();
            if (r.value() == null) continue;
            RecordHeaders headers = new RecordHeaders();
            for (Header h : r.headers()) headers.add(h.key(), bytes(h.value()));
            sent.add(producer.send(new ProducerRecord<>(topicPrefix + r.topic(), null, bytes(r.key()),
                bytes(r.value()), headers), (md, ex) -> {
                  if (ex != null) sendError.set(ex);
                  else if (acked.incrementAndGet() == expect) {
                    System.out.println("DONE " + expect);
                    System.out.flush();
                  }
                }));
          }
          for (Future<RecordMetadata> f : sent) {
            try {
              f.get();
            } catch (java.util.concurrent.ExecutionException e) {
              throw new RuntimeException("Kafka refused a record", e.getCause());
            }
          }
          for (RecordChangeEvent<SourceRecord> ev : batch) committer.markProcessed(ev);
          committer.markBatchFinished();
        })
        .using((boolean success, String message, Throwable error) -> {
          if (!success) {
            System.err.println("debezium engine stopped: " + message);
            if (error != null) error.printStackTrace();
            System.out.println("FAILED " + message);
            System.out.flush();
            Runtime.getRuntime().halt(3);
          }
        })
        .build();

    ExecutorService executor = Executors.newSingleThreadExecutor();
    executor.execute(engine);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        engine.close();
      } catch (Exception ignored) {
        // exiting anyway
      }
      producer.close();
    }));
    while (true) {
      Thread.sleep(200);
      long n = acked.get();
      if (sendError.get() != null) {
        System.out.println("FAILED " + sendError.get());
        System.out.flush();
        Runtime.getRuntime().halt(3);
      }
      System.out.println("ACKED " + n);
      System.out.flush();
    }
  }
}
