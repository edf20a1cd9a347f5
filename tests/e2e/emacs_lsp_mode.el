;;; emacs_lsp_mode.el --- lsp-mode runs labls beside the Python server, in batch mode  -*- lexical-binding: t -*-

;; README.md's lsp-mode snippet: labls as an add-on client next to the buffer's main Python
;; server (here a bare pygls server stands in for pyright or pylsp).  A failed run's
;; diagnostic must reach the buffer while both servers serve it.  Writes $LABLS_OUT.

(require 'json)
(setq lsp-client-packages nil  ; none of lsp-mode's own clients: only the two below
      lsp-auto-guess-root t lsp-enable-snippet nil lsp-enable-file-watchers nil
      lsp-restart 'ignore lsp-keep-workspace-alive nil lsp-warn-no-matched-clients nil
      lsp-session-file (expand-file-name "lsp-session" (getenv "HOME")))
(require 'lsp-mode)

(defvar labls-seen nil)
(defun labls-note (key value) (push (cons key value) labls-seen))
(defun labls-wait (predicate seconds)
  (let ((deadline (+ (float-time) seconds)) value)
    (while (and (not (setq value (funcall predicate))) (< (float-time) deadline))
      (accept-process-output nil 0.1))
    value))

(defvar labls-python (getenv "LABLS_PYTHON"))
(lsp-register-client  ; the user's Python server
 (make-lsp-client :new-connection (lsp-stdio-connection (list labls-python (getenv "LABLS_MAIN")))
                  :activation-fn (lsp-activate-on "python") :priority 1 :server-id 'main-python))
(with-eval-after-load 'lsp-mode  ; README.md's snippet, but for the command
  (lsp-register-client
   (make-lsp-client :new-connection (lsp-stdio-connection
                                     (list labls-python "-m" "labls.server.cli" "serve"))
                    :activation-fn (lsp-activate-on "python")
                    :add-on? t :server-id 'labls)))

(defun labls-ids ()
  (mapcar (lambda (w) (lsp--client-server-id (lsp--workspace-client w))) (lsp-workspaces)))

(condition-case err
    (progn
      (find-file (expand-file-name "bad.py" (getenv "LABLS_WS")))
      (python-mode)
      (lsp)
      (labls-wait (lambda () (and (= (length (lsp-workspaces)) 2)
                                  (seq-every-p (lambda (w) (eq (lsp--workspace-status w)
                                                               'initialized))
                                               (lsp-workspaces))))
                  60)
      (labls-note 'servers (mapcar #'symbol-name (labls-ids)))
      (let* ((labls (seq-find (lambda (w) (eq (lsp--client-server-id (lsp--workspace-client w))
                                              'labls))
                              (lsp-workspaces)))
             (record (with-lsp-workspace labls
                       (lsp-request "workspace/executeCommand"
                                    '(:command "labls.run.start"
                                      :arguments [(:script "bad.py" :wait t)])))))
        (labls-note 'state (gethash "state" record)))
      (let ((found (labls-wait
                    (lambda ()
                      (let (texts)
                        (maphash (lambda (file diags)
                                   (when (string-suffix-p "bad.py" file)
                                     (dolist (d diags)
                                       (push (gethash "message" d) texts))))
                                 (lsp-diagnostics t))
                        texts))
                    30)))
        (labls-note 'diagnostics found))
      (labls-note 'still-both (mapcar #'symbol-name (labls-ids))))
  (error (labls-note 'error (format "%S" err))))
(with-temp-file (getenv "LABLS_OUT") (insert (json-encode labls-seen)))
(kill-emacs 0)
