/* log.h: structured JSON log lines on stderr, one object per line. */
#ifndef JJ_LOG_H
#define JJ_LOG_H

enum { JJ_LOG_DEBUG = 0, JJ_LOG_INFO, JJ_LOG_WARN, JJ_LOG_ERROR };

void jj_log_set_level(int level);
int jj_log_level(void);
void jj_log_set_worker(int worker_id);           /* -1: master */
/* "debug" | "info" | "warn" | "error" -> level, or -1 */
int jj_log_parse_level(const char *s);
/* Writes {"time":..,"level":..,"worker":..,"msg":<formatted>} */
void jj_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, with extra pre-rendered JSON members, e.g. "\"file\":\"x.lua\"" */
void jj_log_kv(int level, const char *json_members, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* An access log line: {"time":..,"level":"info","worker":..,<members>,"msg":"access"},
 * written whatever the level (ACCESS_LOG decides). members up to 6 KiB. */
void jj_log_access(const char *json_members);

#define JJ_DEBUG(...) do { if (jj_log_level() <= JJ_LOG_DEBUG) jj_log(JJ_LOG_DEBUG, __VA_ARGS__); } while (0)
#define JJ_INFO(...)  jj_log(JJ_LOG_INFO, __VA_ARGS__)
#define JJ_WARN(...)  jj_log(JJ_LOG_WARN, __VA_ARGS__)
#define JJ_ERROR(...) jj_log(JJ_LOG_ERROR, __VA_ARGS__)

#endif
