-- labls for Neovim 0.7 to 0.10+: attaches the labls language server to Python buffers (beside
-- any other Python server) and gives :LablsRun, :LablsRuns and :LablsCancel.
--   require("labls").setup({ cmd = { "labls", "serve" } })
local M = { last_run = nil, config = { cmd = { "labls", "serve" } } }

local markers = { "labls.toml", "pyproject.toml", ".git" }

local function root_of(buf)
  local name = vim.api.nvim_buf_get_name(buf)
  local dir = vim.fn.fnamemodify(name, ":p:h")
  local found = vim.fs and vim.fs.find and vim.fs.find(markers, { path = dir, upward = true })[1]
  if found then return vim.fn.fnamemodify(found, ":h") end
  for _, marker in ipairs(markers) do  -- Neovim 0.7 has no vim.fs
    local file = vim.fn.findfile(marker, dir .. ";")
    if file ~= "" then return vim.fn.fnamemodify(file, ":p:h") end
    local folder = vim.fn.finddir(marker, dir .. ";")
    if folder ~= "" then return vim.fn.fnamemodify(folder, ":p:h:h") end
  end
  return dir
end

local function client_of(buf)
  for _, client in pairs(vim.lsp.buf_get_clients(buf)) do
    if client.name == "labls" then return client end
  end
  return nil
end

function M.attach(buf)
  local root = root_of(buf)
  local id = M.clients and M.clients[root]
  if not id then
    id = vim.lsp.start_client({ name = "labls", cmd = M.config.cmd, root_dir = root })
    M.clients = M.clients or {}
    M.clients[root] = id
  end
  vim.lsp.buf_attach_client(buf, id)
end

local function execute(buf, command, args, on_result)
  local client = client_of(buf)
  if not client then
    vim.notify("labls is not attached to this buffer", vim.log.levels.ERROR)
    return
  end
  client.request("workspace/executeCommand", { command = command, arguments = { args } },
    function(err, result)
      if err then
        vim.notify("labls: " .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
      elseif on_result then
        on_result(result)
      end
    end, buf)
end

function M.run(script)
  local buf = vim.api.nvim_get_current_buf()
  local rel = script
  if rel == "" then  -- this buffer's file, relative to the workspace labls serves
    local full = vim.fn.fnamemodify(vim.api.nvim_buf_get_name(buf), ":p")
    local client = client_of(buf)
    local root = client and client.config.root_dir or vim.fn.getcwd()
    rel = full:sub(1, #root + 1) == root .. "/" and full:sub(#root + 2) or full
  end
  execute(buf, "labls.run.start", { script = rel }, function(result)
    M.last_run = result.runId
    vim.notify("labls: run " .. result.runId .. " " .. result.state)
  end)
end

function M.runs()
  local buf = vim.api.nvim_get_current_buf()
  execute(buf, "labls.run.list", { limit = 20 }, function(result)
    local lines = {}
    for _, r in ipairs(result.runs) do
      local error = r.error ~= vim.NIL and r.error and (" " .. r.error.kind) or ""
      table.insert(lines, string.format("%s  %-10s %s%s", r.runId, r.state, r.script, error))
    end
    vim.cmd("botright new")
    local out = vim.api.nvim_get_current_buf()
    vim.api.nvim_buf_set_lines(out, 0, -1, false, lines)
    vim.bo[out].buftype, vim.bo[out].bufhidden, vim.bo[out].modified = "nofile", "wipe", false
    vim.api.nvim_buf_set_name(out, "labls://runs")
  end)
end

function M.cancel(run_id)
  local buf = vim.api.nvim_get_current_buf()
  local wanted = run_id ~= "" and run_id or M.last_run
  if not wanted then
    vim.notify("labls: no run to cancel (give its id)", vim.log.levels.ERROR)
    return
  end
  execute(buf, "labls.run.cancel", { runId = wanted }, function(result)
    vim.notify("labls: run " .. result.runId .. " " .. result.state)
  end)
end

function M.setup(opts)
  M.config = vim.tbl_extend("force", M.config, opts or {})
  vim.cmd([[
    augroup labls
      autocmd!
      autocmd FileType python lua require("labls").attach(vim.api.nvim_get_current_buf())
    augroup END
    command! -nargs=? LablsRun lua require("labls").run(<q-args>)
    command! LablsRuns lua require("labls").runs()
    command! -nargs=? LablsCancel lua require("labls").cancel(<q-args>)
  ]])
end

return M
