/*
 * cmd_publish.c — `nudge publish`: reports folder changes as a mail server
 * would, with POST /v1/events, and prints the new states.
 *
 * One --folder sends one event object; several send one batch (an array,
 * all or nothing on the server) for the same user, type and metadata. The
 * request is built with jansson so any user or folder name is escaped
 * properly. One request, one connection: nothing is kept alive.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cli/httpc.h"

enum {
    OPT_USER = CLI_OPT_FIRST_OWN,
    OPT_FOLDER,
    OPT_TYPE,
    OPT_META,
};

/* A publish is answered at once; 30 s covers a loaded server without hanging a script. */
#define PUBLISH_TIMEOUT_MS 30000
/* A token minted for one request only needs to outlive it; an hour forgives clock skew. */
#define PUBLISH_MINT_TTL 3600

void cmd_publish_usage(FILE *out)
{
    fprintf(out,
            "Usage: nudge publish --user ID --folder NAME [--folder NAME ...] [--type TYPE]\n"
            "                     [--meta KEY=VALUE ...] [SERVER OPTIONS]\n"
            "\n"
            "Reports a change of the user's folder to nudged (POST /v1/events), as a mail\n"
            "server does, and prints the new state of each folder:\n"
            "  user=alice folder=INBOX state=18\n"
            "\n"
            "  --user ID             the user whose folder changed (required)\n"
            "  --folder NAME         the folder that changed (required; repeat it to send\n"
            "                        one all-or-nothing batch)\n"
            "  --type TYPE           event type: new, read, expunge, flags, ... (default: the\n"
            "                        server's, new)\n"
            "  --meta KEY=VALUE      metadata passed through to channels that carry it\n"
            "                        (repeatable; KEY may not be user, folder or type)\n"
            "  -h, --help            show this help\n"
            "\n"
            "Server options:\n" CLI_SERVER_HELP
            "\n"
            "Without --token, -c or --secret-file make publish mint a short-lived publisher\n"
            "token from the server secret itself (handy on the server's own machine).\n"
            "\n"
            "Exit status: 0 the server applied the events; 1 it refused them (the reason is\n"
            "printed as 'nudge publish: HTTP 400: ...') or could not be reached; 2 usage.\n");
}

/* Builds one event, or NULL with *bad naming the option whose value JSON cannot carry. */
static json_t *event_new(const char *user, const char *folder, const char *type, char **metas,
                         size_t nmetas, const char **bad)
{
    json_t *ev = json_object(), *v;

    if (ev == NULL) {
        *bad = "memory";
        return NULL;
    }
    if ((v = json_string(user)) == NULL || json_object_set_new(ev, "user", v) < 0) {
        *bad = "--user";
        goto fail;
    }
    if ((v = json_string(folder)) == NULL || json_object_set_new(ev, "folder", v) < 0) {
        *bad = "--folder";
        goto fail;
    }
    if (type != NULL &&
        ((v = json_string(type)) == NULL || json_object_set_new(ev, "type", v) < 0)) {
        *bad = "--type";
        goto fail;
    }
    for (size_t i = 0; i < nmetas; i++) {
        char *eq = strchr(metas[i], '=');
        char key[256];
        size_t klen = (size_t)(eq - metas[i]);

        /* Checked by the caller: '=' present, key length in 1..255. */
        memcpy(key, metas[i], klen);
        key[klen] = '\0';
        if ((v = json_string(eq + 1)) == NULL || json_object_set_new(ev, key, v) < 0) {
            *bad = "--meta";
            goto fail;
        }
    }
    return ev;
fail:
    json_decref(ev);
    return NULL;
}


/* Prints the answer's states. Returns an exit code. */
static int print_states(const struct httpc_response *resp)
{
    json_error_t jerr;
    json_t *root = json_loadb(resp->body, resp->body_len, 0, &jerr);
    json_t *states = json_object_get(root, "states"), *st;
    size_t i;

    if (!json_is_array(states)) {
        fprintf(stderr, "nudge publish: HTTP 200 without a \"states\" array: %.200s\n",
                resp->body);
        json_decref(root);
        return CLI_EXIT_FAIL;
    }
    json_array_foreach(states, i, st) {
        const char *user = json_string_value(json_object_get(st, "user"));
        const char *folder = json_string_value(json_object_get(st, "folder"));
        json_t *state = json_object_get(st, "state");

        if (user == NULL || folder == NULL || !(json_is_string(state) || json_is_integer(state))) {
            fprintf(stderr, "nudge publish: states[%zu] is not {user, folder, state}\n", i);
            json_decref(root);
            return CLI_EXIT_FAIL;
        }
        if (json_is_string(state))
            printf("user=%s folder=%s state=%s\n", user, folder, json_string_value(state));
        else
            printf("user=%s folder=%s state=%lld\n", user, folder,
                   (long long)json_integer_value(state));
    }
    json_decref(root);
    return CLI_EXIT_OK;
}

/* The events to send, filled by on_option. Both lists are bounded by argc. */
struct publish_args {
    const char *user, *type;
    char **folders, **metas;
    size_t nfolders, nmetas;
};

static int on_option(void *arg, const char *cmd, int opt, char *value)
{
    struct publish_args *a = arg;
    char *eq;
    size_t klen;

    switch (opt) {
    case OPT_USER:
        a->user = value;
        break;
    case OPT_FOLDER:
        a->folders[a->nfolders++] = value;
        break;
    case OPT_TYPE:
        a->type = value;
        break;
    case OPT_META:
        eq = strchr(value, '=');
        klen = eq ? (size_t)(eq - value) : 0;
        if (eq == NULL || klen == 0 || klen > 255)
            return cli_usage_error(cmd, "--meta '%s': expected KEY=VALUE with a 1 to 255 byte KEY",
                                   value);
        if ((klen == 4 && memcmp(value, "user", 4) == 0) ||
            (klen == 6 && memcmp(value, "folder", 6) == 0) ||
            (klen == 4 && memcmp(value, "type", 4) == 0))
            return cli_usage_error(cmd, "--meta '%s': use --%.*s for this field", value, (int)klen,
                                   value);
        for (size_t i = 0; i < a->nmetas; i++)
            if (strncmp(a->metas[i], value, klen + 1) == 0)
                return cli_usage_error(cmd, "--meta: key '%.*s' given twice", (int)klen, value);
        a->metas[a->nmetas++] = value;
        break;
    }
    return 0;
}

int cmd_publish(int argc, char **argv)
{
    static const struct option options[] = {
        {"user", required_argument, NULL, OPT_USER},
        {"folder", required_argument, NULL, OPT_FOLDER},
        {"type", required_argument, NULL, OPT_TYPE},
        {"meta", required_argument, NULL, OPT_META},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "publish";
    const char *bad = NULL;
    struct publish_args a = {0};
    struct cli_server srv;
    struct httpc http;
    struct httpc_response resp;
    char token[TOKEN_MAX], err[512];
    json_t *payload = NULL;
    char *body = NULL;
    int rc;

    /* argc bounds both lists: each entry is one argument. */
    a.folders = calloc((size_t)argc, sizeof(*a.folders));
    a.metas = calloc((size_t)argc, sizeof(*a.metas));
    if (a.folders == NULL || a.metas == NULL) {
        fprintf(stderr, "nudge publish: out of memory\n");
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    rc = cli_parse_args(cmd, argc, argv, options, &srv, cmd_publish_usage, on_option, &a);
    if (rc != CLI_ARGS_PARSED)
        goto done;
    if (a.user == NULL || a.nfolders == 0) {
        rc = cli_usage_error(cmd, "missing %s",
                             a.user != NULL   ? "--folder"
                             : a.nfolders > 0 ? "--user"
                                              : "--user and --folder");
        goto done;
    }

    if (a.nfolders == 1) {
        payload = event_new(a.user, a.folders[0], a.type, a.metas, a.nmetas, &bad);
    } else {
        payload = json_array();
        for (size_t i = 0; payload != NULL && i < a.nfolders; i++) {
            json_t *ev = event_new(a.user, a.folders[i], a.type, a.metas, a.nmetas, &bad);
            if (ev == NULL || json_array_append_new(payload, ev) < 0) {
                json_decref(payload);
                payload = NULL;
            }
        }
    }
    if (payload == NULL) {
        if (bad != NULL && strcmp(bad, "memory") != 0) {
            rc = cli_usage_error(cmd, "%s: not valid UTF-8, which JSON requires", bad);
        } else {
            fprintf(stderr, "nudge publish: out of memory\n");
            rc = CLI_EXIT_FAIL;
        }
        goto done;
    }
    body = json_dumps(payload, JSON_COMPACT);
    if (body == NULL) {
        fprintf(stderr, "nudge publish: out of memory\n");
        rc = CLI_EXIT_FAIL;
        goto done;
    }

    if (httpc_init(&http, srv.url, PUBLISH_TIMEOUT_MS, err, sizeof(err)) < 0) {
        rc = cli_usage_error(cmd, "%s", err);
        goto done;
    }
    rc = cli_server_token(&srv, cmd, TOKEN_PUBLISHER, "nudge publish", PUBLISH_MINT_TTL, token);
    if (rc != CLI_EXIT_OK)
        goto done;
    if (httpc_request(&http, "POST", "/v1/events", token, body, strlen(body), &resp, err,
                      sizeof(err)) < 0) {
        fprintf(stderr, "nudge publish: %s\n", err);
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    httpc_close(&http);
    if (resp.status == 200) {
        rc = print_states(&resp);
    } else {
        cli_print_http_error("publish", &resp);
        rc = CLI_EXIT_FAIL;
    }
    httpc_response_free(&resp);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "nudge publish: writing the answer failed\n");
        rc = CLI_EXIT_FAIL;
    }
done:
    free(body);
    json_decref(payload);
    free(a.folders);
    free(a.metas);
    return rc;
}
