/* log.c: JSON log lines. Each line is built in one buffer and written with a
 * single write(2), so lines from workers sharing stderr never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int min_level = JJ_LOG_INFO;
static int worker_id = -1;
static const char *names[] = {"debug", "info", "warn", "error"};

void jj_log_set_level(int level) { min_level = level; }
int jj_log_level(void) { return min_level; }
void jj_log_set_worker(int id) { worker_id = id; }

int jj_log_parse_level(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0) return i;
    if (strcasecmp(s, "warning") == 0) return JJ_LOG_WARN;
    return -1;
}

/* Appends s as JSON string content (without quotes); returns new length. */
static size_t escape(char *out, size_t pos, size_t cap, const char *s) {
    for (; *s && pos + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { out[pos++] = '\\'; out[pos++] = (char)c; }
        else if (c == '\n') { out[pos++] = '\\'; out[pos++] = 'n'; }
        else if (c == '\t') { out[pos++] = '\\'; out[pos++] = 't'; }
        else if (c < 0x20) pos += (size_t)snprintf(out + pos, cap - pos, "\\u%04x", c);
        else out[pos++] = (char)c;
    }
    return pos;
}

static void write_line(int level, const char *members, const char *msg) {
    char line[10240];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "{\"time\":\"%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ\",\"level\":\"%s\",\"worker\":%d,",
                          ts.tv_nsec / 1000000, names[level < 0 ? 0 : level > 3 ? 3 : level], worker_id);
    if (members && *members) n += (size_t)snprintf(line + n, sizeof line - n, "%s,", members);
    if (n >= sizeof line - 16) n = sizeof line - 16;
    memcpy(line + n, "\"msg\":\"", 7);
    n = escape(line, n + 7, sizeof line - 4, msg);
    memcpy(line + n, "\"}\n", 3);
    n += 3;
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

static void vlog(int level, const char *members, const char *fmt, va_list ap) {
    if (level < min_level) return;
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt, ap);
    write_line(level, members, msg);
}

void jj_log_access(const char *members) { write_line(JJ_LOG_INFO, members, "access"); }

void jj_log(int level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, fmt, ap);
    va_end(ap);
}

void jj_log_kv(int level, const char *members, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(level, members, fmt, ap);
    va_end(ap);
}
