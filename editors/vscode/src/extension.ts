// labls for VS Code: starts the labls language server for Python files (beside any other
// Python extension), shows the current run in the status bar and offers three commands. Code
// lenses, code actions, diagnostics and progress come from the server itself.
import * as path from "path";
import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions } from "vscode-languageclient/node";

interface RunSummary {
  runId: string;
  state: string;
  script: string;
  metrics: Record<string, number>;
  error: { kind: string; message: string } | null;
}

let client: LanguageClient | undefined;
let status: vscode.StatusBarItem;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const config = vscode.workspace.getConfiguration("labls");
  const [command, ...args] = config.get<string[]>("command", ["labls", "serve"]);
  const serverOptions: ServerOptions = { command, args };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file", language: "python" }],
    initializationOptions: config.get<object>("settings", {}),
  };
  client = new LanguageClient("labls", "labls", serverOptions, clientOptions);
  status = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 50);
  status.command = "labls.showRuns";
  status.text = "labls";
  status.show();
  context.subscriptions.push(
    status,
    vscode.commands.registerCommand("labls.runCurrentFile", runCurrentFile),
    vscode.commands.registerCommand("labls.showRuns", showRuns),
    vscode.commands.registerCommand("labls.cancelRun", cancelRun),
  );
  await client.start();
  client.onNotification("labls/runFinished", (params: { run: RunSummary }) => {
    status.text = `labls: ${params.run.script} ${params.run.state} ${shown(params.run)}`;
    status.tooltip = params.run.error ? params.run.error.message : params.run.runId;
  });
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}

function shown(run: RunSummary): string {
  const first = Object.entries(run.metrics ?? {})[0];
  return first ? `${first[0]}=${first[1].toPrecision(4)}` : "";
}

async function execute<T>(command: string, args: object): Promise<T> {
  if (!client) {
    throw new Error("the labls server is not running");
  }
  return client.sendRequest("workspace/executeCommand", { command, arguments: [args] });
}

async function runCurrentFile(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const folder = editor && vscode.workspace.getWorkspaceFolder(editor.document.uri);
  if (!editor || !folder) {
    void vscode.window.showErrorMessage("labls: open a file of the workspace first");
    return;
  }
  const script = path.relative(folder.uri.fsPath, editor.document.uri.fsPath);
  const started = await execute<{ runId: string; state: string }>("labls.run.start", { script });
  status.text = `labls: ${script} ${started.state}`;
  status.tooltip = started.runId;
}

async function pickRun(state?: string): Promise<RunSummary | undefined> {
  const listed = await execute<{ runs: RunSummary[] }>("labls.run.list", state ? { state } : {});
  const items = listed.runs.map((run) => ({
    label: `${run.script}  ${run.state}`,
    description: `${run.runId} ${shown(run)}`,
    detail: run.error ? `${run.error.kind}: ${run.error.message}` : undefined,
    run,
  }));
  const chosen = await vscode.window.showQuickPick(items, { placeHolder: "a labls run" });
  return chosen?.run;
}

async function showRuns(): Promise<void> {
  const run = await pickRun();
  if (run) {
    await execute("labls.run.showLog", { runId: run.runId });
  }
}

async function cancelRun(): Promise<void> {
  const run = await pickRun("running");
  if (run) {
    const done = await execute<RunSummary>("labls.run.cancel", { runId: run.runId });
    void vscode.window.showInformationMessage(`labls: run ${done.runId} ${done.state}`);
  }
}
