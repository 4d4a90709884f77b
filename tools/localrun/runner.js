// Runs one execution of a state machine definition with aws-local-stepfunctions.
//
// Usage: node runner.js DEFINITION.json, then one line of JSON on stdin:
// {input, context, servicesUrl, retryIntervalOverrides, waitTimeOverrides}
//
// The definition is loaded and validated before the run's line arrives (a
// {"type": "RunnerReady"} line says so), so a runner can be started ahead of
// its execution, the way the Step Functions service is up before a StartExecution.
//
// Every Task state is overridden with a handler that POSTs {state, resource, input}
// to the local services (servicesUrl), which run the CodeBuild / Lambda / SNS /
// EventBridge stand-ins; an answer {error, cause} is thrown as an error of that
// name, so Retry and Catch match it as in AWS. The execution's events are written
// to stdout as JSON lines, then one {"type": "RunnerResult", ...} line.
'use strict';

const fs = require('node:fs');
const { StateMachine } = require('aws-local-stepfunctions');

function collectTaskStates(states, out) {
  for (const [name, state] of Object.entries(states || {})) {
    if (state.Type === 'Task') out.push([name, state]);
    for (const branch of state.Branches || []) collectTaskStates(branch.States, out);
    const processor = state.ItemProcessor || state.Iterator;
    if (processor) collectTaskStates(processor.States, out);
  }
  return out;
}

function write(line) {
  process.stdout.write(JSON.stringify(line) + '\n');
}

async function callService(url, state, resource, input) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ state, resource, input }),
  });
  const body = await response.json();
  if (body.error !== undefined) {
    const error = new Error(body.cause);
    error.name = body.error;
    throw error;
  }
  return body.result;
}

function readLine(stream) {
  return new Promise((resolve, reject) => {
    let buffered = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      buffered += chunk;
      const end = buffered.indexOf('\n');
      if (end >= 0) {
        // Nothing more is read; an open stdin would keep the process alive after the run.
        stream.removeAllListeners();
        stream.destroy();
        resolve(buffered.slice(0, end));
      }
    });
    stream.on('end', () => reject(new Error('stdin closed before the run configuration')));
  });
}

async function main() {
  const definition = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  let config = null;
  const handlers = {};
  for (const [name, state] of collectTaskStates(definition.States, [])) {
    handlers[name] = (input) => callService(config.servicesUrl, name, state.Resource, input);
  }
  const machine = new StateMachine(definition, {
    // Service-integration ARNs (arn:aws:states:::codebuild:startBuild.sync, ...) are valid in
    // AWS but not Lambda ARNs, which is all this validator's ARN check accepts.
    validationOptions: { checkArn: false },
  });
  write({ type: 'RunnerReady' });
  config = JSON.parse(await readLine(process.stdin));
  const execution = machine.run(config.input, {
    overrides: {
      taskResourceLocalHandlers: handlers,
      retryIntervalOverrides: config.retryIntervalOverrides || {},
      waitTimeOverrides: config.waitTimeOverrides || {},
    },
    context: config.context,
  });
  const streaming = (async () => {
    for await (const event of execution.eventLogs) write(event);
  })();
  let result;
  try {
    const output = await execution.result;
    result = { type: 'RunnerResult', status: 'SUCCEEDED', output };
  } catch (error) {
    const cause = error.cause || error;
    result = {
      type: 'RunnerResult',
      status: 'FAILED',
      error: cause.name,
      cause: cause.message,
    };
  }
  await streaming;
  write(result);
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
