-- Neovim 0.7 as an editor user drives labls: the script's code lenses, the run lens executed,
-- the run's diagnostic, the code actions on it, and the last-run lens resolved afterwards.
-- Writes what it saw as JSON to $LABLS_OUT.
local common = dofile(vim.env.LABLS_TESTS .. "/nvim_common.lua")
local finish = common.finish

local function request(client, method, params, buf)
  local answer = nil
  client.request(method, params, function(err, result) answer = { err = err, result = result } end,
                 buf)
  vim.wait(30000, function() return answer ~= nil end, 20)
  return answer or { err = "no answer to " .. method }
end

vim.api.nvim_create_autocmd("VimEnter", { callback = function()
  local buf = vim.api.nvim_get_current_buf()
  local client, id = common.attach(buf)
  if not client then return finish({ error = "labls did not initialize" }) end
  local doc = { uri = vim.uri_from_bufnr(buf) }
  local lenses = request(client, "textDocument/codeLens", { textDocument = doc }, buf)
  if lenses.err or not lenses.result or #lenses.result < 2 then
    return finish({ error = "no lenses", lenses = lenses })
  end
  local run = lenses.result[1].command
  local started = request(client, "workspace/executeCommand",
                          { command = run.command, arguments = run.arguments }, buf)
  local diag = nil
  vim.wait(60000, function()
    for _, d in ipairs(vim.diagnostic.get(buf)) do
      if d.source == "labls" and d.severity == vim.diagnostic.severity.ERROR then
        -- in LSP form, as Neovim's own code action request builds its context
        diag = vim.lsp.diagnostic.get_line_diagnostics(buf, d.lnum)[1]
        return diag ~= nil
      end
    end
    return false
  end, 20)
  if diag == nil then return finish({ error = "no diagnostic", started = started }) end
  local actions = request(client, "textDocument/codeAction", {
    textDocument = doc, range = diag.range, context = { diagnostics = { diag } } }, buf)
  local titles = {}
  for _, a in ipairs(actions.result or {}) do table.insert(titles, a.title) end
  local last = request(client, "codeLens/resolve", lenses.result[2], buf)
  vim.lsp.stop_client(id)
  finish({ run_lens = run, actions = titles, actions_err = actions.err, last = last.result,
           started = started.result })
end })
